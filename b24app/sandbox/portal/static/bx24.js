/* BX24 JS shim of the b24app Bitrix24 sandbox: the subset of //api.bitrix24.com/api/v1/ apps use.
 * It talks to the portal page (window.parent) with postMessage and calls REST directly with the
 * auth it received, as the real library does. */
(function (window) {
  'use strict';
  if (window.BX24 && window.BX24.__sandbox) return;

  var parentWin = window.parent;
  var seq = 0, pending = {}, initData = null, initCallbacks = [], initRequested = false;

  function send(cmd, params, cb) {
    var id = ++seq;
    if (typeof cb === 'function') pending[id] = cb;
    if (parentWin && parentWin !== window) {
      parentWin.postMessage({bx24: true, id: id, cmd: cmd, params: params || {}}, '*');
    }
  }

  window.addEventListener('message', function (e) {
    if (e.source !== parentWin) return;
    var m = e.data;
    if (!m || !m.bx24reply) return;
    var cb = pending[m.id];
    delete pending[m.id];
    if (cb) cb(m.data);
  });

  function buildQuery(obj, prefix) {
    var parts = [];
    Object.keys(obj || {}).forEach(function (key) {
      var value = obj[key];
      var name = prefix ? prefix + '[' + key + ']' : key;
      if (value === null || value === undefined) return;
      if (typeof value === 'object') {
        var nested = buildQuery(value, name);
        if (nested) parts.push(nested);
      } else {
        if (value === true) value = 1;
        if (value === false) value = 0;
        parts.push(encodeURIComponent(name) + '=' + encodeURIComponent(value));
      }
    });
    return parts.join('&');
  }

  function restUrl(method) {
    return (String(initData.PROTOCOL) === '1' ? 'https' : 'http') + '://' + initData.DOMAIN + '/rest/' + method + '.json';
  }

  function AjaxResult(answer, status, query) {
    this.answer = answer || {};
    this.status = status;
    this.query = query;
  }
  AjaxResult.prototype.data = function () { return this.answer.result; };
  AjaxResult.prototype.error = function () {
    if (!this.answer.error) return false;
    var self = this;
    return {
      status: self.status, ex: self.answer,
      getError: function () { return self.answer; },
      getStatus: function () { return self.status; },
      toString: function () { return self.answer.error + (self.answer.error_description ? ': ' + self.answer.error_description : ''); }
    };
  };
  AjaxResult.prototype.error_description = function () { return this.answer.error_description; };
  AjaxResult.prototype.more = function () { return typeof this.answer.next !== 'undefined'; };
  AjaxResult.prototype.total = function () { return parseInt(this.answer.total, 10) || 0; };
  AjaxResult.prototype.time = function () { return this.answer.time; };
  AjaxResult.prototype.next = function (cb) {
    if (!this.more()) return false;
    var params = Object.assign({}, this.query.params, {start: this.answer.next});
    BX24.callMethod(this.query.method, params, cb || this.query.callback);
    return true;
  };

  function rawCall(method, params, cb, retried) {
    var body = Object.assign({}, params || {}, {auth: initData.AUTH_ID});
    fetch(restUrl(method), {
      method: 'POST', headers: {'Content-Type': 'application/json'}, body: JSON.stringify(body)
    }).then(function (response) {
      return response.json().then(function (json) { return {status: response.status, json: json}; },
                                   function () { return {status: response.status, json: {error: 'ERROR_UNEXPECTED_ANSWER'}}; });
    }).then(function (r) {
      if (r.status === 401 && r.json.error === 'expired_token' && !retried) {
        BX24.refreshAuth(function () { rawCall(method, params, cb, true); });
        return;
      }
      if (cb) cb(new AjaxResult(r.json, r.status, {method: method, params: params, callback: cb}));
    }, function (err) {
      if (cb) cb(new AjaxResult({error: 'NETWORK_ERROR', error_description: String(err)}, 0,
                                {method: method, params: params, callback: cb}));
    });
  }

  var BX24 = {
    __sandbox: true,
    init: function (cb) {
      if (initData) { if (cb) cb(); return; }
      initCallbacks.push(cb);
      if (initRequested) return;
      initRequested = true;
      send('getInitData', {}, function (data) {
        initData = data || {};
        var callbacks = initCallbacks;
        initCallbacks = [];
        callbacks.forEach(function (f) { if (typeof f === 'function') f(); });
      });
    },
    ready: function (cb) { BX24.init(cb); },
    isAdmin: function () { return !!(initData && initData.IS_ADMIN); },
    getLang: function () { return initData ? initData.LANG : 'ru'; },
    getDomain: function () { return initData ? initData.DOMAIN : ''; },
    getAuth: function () {
      if (!initData) return false;
      return {access_token: initData.AUTH_ID, refresh_token: initData.REFRESH_ID,
              expires_in: initData.AUTH_EXPIRES, domain: initData.DOMAIN, member_id: initData.MEMBER_ID};
    },
    refreshAuth: function (cb) {
      send('refreshAuth', {}, function (data) {
        if (data && data.AUTH_ID) { initData.AUTH_ID = data.AUTH_ID; initData.REFRESH_ID = data.REFRESH_ID; }
        if (cb) cb(BX24.getAuth());
      });
    },
    installFinish: function () { send('installFinish', {}); },
    getScrollSize: function () {
      var d = document.documentElement, b = document.body;
      return {scrollWidth: Math.max(d.scrollWidth, b ? b.scrollWidth : 0),
              scrollHeight: Math.max(d.scrollHeight, b ? b.scrollHeight : 0)};
    },
    fitWindow: function (cb) {
      send('fitWindow', {width: '100%', height: BX24.getScrollSize().scrollHeight}, cb);
    },
    resizeWindow: function (width, height, cb) { send('resizeWindow', {width: width, height: height}, cb); },
    setTitle: function (title, cb) { send('setTitle', {title: title}, cb); },
    reloadWindow: function () { send('reloadWindow', {}); },
    openApplication: function (params, cb) { send('openApplication', params || {}, cb); },
    closeApplication: function (cb) { send('closeApplication', {}, cb); },
    openPath: function (path, cb) { send('openPath', {path: path}, cb); },
    placement: {
      info: function () { return initData ? {placement: initData.PLACEMENT, options: initData.PLACEMENT_OPTIONS} : {}; },
      call: function (command, params, cb) { send('placementCall', {command: command, params: params}, cb); },
      bindEvent: function (eventName, cb) { send('placementBindEvent', {event: eventName}, cb); },
      getInterface: function (cb) { if (cb) cb({command: [], event: []}); }
    },
    callMethod: function (method, params, cb) {
      var run = function () { rawCall(method, params, cb, false); };
      if (initData) run(); else BX24.init(run);
    },
    callBatch: function (calls, cb, haltOnError) {
      var cmd = Array.isArray(calls) ? [] : {};
      Object.keys(calls).forEach(function (key) {
        var c = calls[key], method, params;
        if (Array.isArray(c)) { method = c[0]; params = c[1]; } else { method = c.method; params = c.params; }
        cmd[key] = method + '?' + buildQuery(params || {});
      });
      BX24.callMethod('batch', {halt: haltOnError ? 1 : 0, cmd: cmd}, function (res) {
        var out = Array.isArray(calls) ? [] : {};
        var data = res.data() || {};
        Object.keys(calls).forEach(function (key) {
          var err = data.result_error && data.result_error[key];
          var answer = err ? err : {result: data.result ? data.result[key] : undefined,
                                    total: data.result_total ? data.result_total[key] : undefined,
                                    next: data.result_next ? data.result_next[key] : undefined};
          out[key] = new AjaxResult(answer, err ? 400 : 200, {method: 'batch', params: {}});
        });
        if (cb) cb(out);
      });
    },
    callBind: function (event, handler, authType, cb) {
      BX24.callMethod('event.bind', {event: event, handler: handler, auth_type: authType || 0}, cb);
    },
    callUnbind: function (event, handler, authType, cb) {
      BX24.callMethod('event.unbind', {event: event, handler: handler, auth_type: authType || 0}, cb);
    }
  };

  window.BX24 = BX24;
})(window);
