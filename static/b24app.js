/* b24app pages inside Bitrix24: the deal/invoice tab and the admin page.
 * No framework, no external resources. Every call carries the frame token in a header (no cookies
 * in a cross-site iframe); HTML fragments come rendered and escaped by the server. */
(function () {
  'use strict';

  var cfgNode = document.getElementById('b24app-config');
  if (!cfgNode) return;
  var cfg = JSON.parse(cfgNode.textContent);
  var T = cfg.texts || {};
  var token = cfg.token;
  var root = document.getElementById('b24app');
  var flashTimer = null;

  // -- Bitrix24 frame size -----------------------------------------------------------------------
  var lastHeight = 0, fitQueued = false;
  function contentHeight() {
    var body = document.body;
    var style = window.getComputedStyle(body);
    return Math.ceil(body.getBoundingClientRect().height + parseFloat(style.marginTop || 0) +
                     parseFloat(style.marginBottom || 0));
  }
  function fit() {
    if (fitQueued) return;
    fitQueued = true;
    window.requestAnimationFrame(function () {
      fitQueued = false;
      var bx = window.BX24;
      if (!bx) return;                      // works without the BX24 script (opened outside Bitrix24)
      var h = Math.max(120, contentHeight());
      if (h === lastHeight) return;
      lastHeight = h;
      // resizeWindow with the measured height, both ways: fitWindow sends the document's scrollHeight, which
      // is never less than the frame's current height, so a frame opened taller than its content kept an
      // empty band below it.
      try {
        if (typeof bx.resizeWindow === 'function') bx.resizeWindow('100%', h);
        else if (typeof bx.fitWindow === 'function') bx.fitWindow();
      } catch (e) { /* the parent may be gone; nothing to resize */ }
    });
  }
  function whenBX24(fn) {
    if (window.BX24 && typeof window.BX24.init === 'function') {
      try { window.BX24.init(fn); } catch (e) { fn(); }
    }
  }
  var bxScript = document.getElementById('bx24-script');
  if (bxScript) bxScript.addEventListener('load', function () { whenBX24(function () { lastHeight = 0; fit(); }); });
  whenBX24(fit);
  if (window.ResizeObserver) new ResizeObserver(fit).observe(document.body);
  window.addEventListener('load', fit);

  // -- messages ------------------------------------------------------------------------------------
  function flash(text, kind) {
    var box = document.getElementById('flash');
    if (!box) return;
    box.textContent = text || '';
    box.className = 'b24-flash' + (text ? ' b24-flash--' + (kind || 'info') : '');
    if (flashTimer) clearTimeout(flashTimer);
    if (text && kind !== 'danger') flashTimer = setTimeout(function () { flash(''); }, 6000);
  }

  // A 401 means the tab must be opened again (the frame token is too old, or Bitrix24 vouched for the user
  // too long ago): say so once, stop polling, and offer Bitrix24's own reload of the app frame.
  var expired = false;
  function showExpired() {
    if (expired) return;
    expired = true;
    flash(T.expired, 'danger');
    var box = document.getElementById('flash'), bx = window.BX24;
    if (!box || !bx || typeof bx.reloadWindow !== 'function') return;
    var button = document.createElement('button');
    button.type = 'button';
    button.className = 'ui-btn ui-btn-xs ui-btn-light-border';
    button.textContent = T.reload || 'Reload';
    button.addEventListener('click', function () { bx.reloadWindow(); });
    box.appendChild(document.createTextNode(' '));
    box.appendChild(button);
  }

  // -- API -------------------------------------------------------------------------------------------
  function api(method, url, body, extraHeaders) {
    var headers = {'X-Frame-Token': token, 'Accept': 'application/json'};
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    Object.keys(extraHeaders || {}).forEach(function (k) { headers[k] = extraHeaders[k]; });
    return fetch(url, {method: method, headers: headers, credentials: 'omit', cache: 'no-store',
                       body: body === undefined ? undefined : JSON.stringify(body)})
      .then(function (r) {
        var renewed = r.headers.get('X-Frame-Token');
        if (renewed) token = renewed;
        if (r.status === 304) return {status: 304, data: null};
        return r.json().catch(function () { return {}; }).then(function (data) {
          if (r.status === 401) showExpired();
          else if (r.status === 403) flash(T.forbidden, 'danger');
          else if (r.status >= 400) flash((data && data.message) || T.failed, 'danger');
          return {status: r.status, data: data};
        });
      })
      .catch(function () { flash(T.failed, 'danger'); return {status: 0, data: null}; });
  }

  function busy(button, on) {
    if (!button) return;
    button.disabled = on;
    button.classList.toggle('ui-btn-wait', on);
    button.setAttribute('aria-busy', on ? 'true' : 'false');
  }

  // -- refreshable regions ---------------------------------------------------------------------------
  var version = cfg.version;
  function refresh(force) {
    if (!cfg.api) return Promise.resolve();
    var headers = force ? {} : {'If-None-Match': '"' + version + '"'};
    return api('GET', cfg.api + (cfg.query ? cfg.query() : ''), undefined, headers).then(function (res) {
      if (res.status !== 200 || !res.data) return;
      version = res.data.version || version;
      var target = document.getElementById(cfg.target || 'widget-body');
      if (target && typeof res.data.html === 'string') {
        target.innerHTML = res.data.html;
        target.setAttribute('data-version', version);
      }
      var line = document.getElementById('sync-line');
      if (line && res.data.sync_line) line.textContent = res.data.sync_line;
      var check = root.querySelector('[data-action="check"]');
      if (check && res.data.bank) check.hidden = !(res.data.bank.linked && res.data.can_act);
      fit();
    });
  }

  // -- "check the bank now" with progress -------------------------------------------------------------
  var syncing = false;
  function setProgress(percent) {
    var box = document.getElementById('sync-progress');
    if (!box) return;
    box.hidden = percent === null;
    var bar = box.querySelector('.b24-progress__bar');
    var meter = box.querySelector('[role="progressbar"]');
    if (percent !== null) {
      bar.style.width = Math.max(4, percent) + '%';
      meter.setAttribute('aria-valuenow', String(percent));
    }
    fit();
  }
  function syncNow(button, body) {
    if (syncing || !cfg.sync) return;
    syncing = true;
    busy(button, true);
    flash(T.checking, 'info');
    setProgress(5);
    var started = Date.now();
    var since = null, backfill = !!(body && body.days);
    api('POST', cfg.sync, body || {}).then(function (res) {
      if (res.status !== 202 && res.status !== 200) { finish(); return; }
      since = res.data && res.data.since;
      poll(res.data);
    });
    function done(state) {
      if (backfill && state && typeof state.loaded === 'number') {
        flash(String(T.loaded).replace('{n}', state.loaded), 'success');
      } else {
        flash(T.checked, 'success');
      }
    }
    function poll(state) {
      if (state && state.errors && state.errors.length && state.finished) {
        flash(String(T.check_failed).replace('{error}', state.errors[0]), 'danger');
        finish();
        return;
      }
      if (state && state.finished && Date.now() - started > 600) {
        setProgress(100);
        // The worker reconciles right after the statement is stored: give it a moment, then refresh.
        setTimeout(function () { refresh(true).then(function () { done(state); finish(); }); }, 800);
        return;
      }
      if (Date.now() - started > 90000) { flash(T.check_timeout, 'warning'); finish(); return; }
      var elapsed = (Date.now() - started) / 1000;
      var pct = state && state.accounts ? Math.max(state.percent || 0, Math.min(90, 10 + elapsed * 8)) :
        Math.min(90, 10 + elapsed * 8);
      setProgress(Math.round(pct));
      setTimeout(function () {
        api('GET', cfg.sync + (since ? '?since=' + encodeURIComponent(since) : ''))
          .then(function (r) { poll(r.status === 200 ? r.data : state); });
      }, 700);
    }
    function finish() {
      syncing = false;
      busy(button, false);
      setTimeout(function () { setProgress(null); }, 400);
    }
  }

  // -- the bank link popup ---------------------------------------------------------------------------
  function linkBank(button) {
    if (!cfg.link) return;
    // Open the window inside the click (popup blockers), then point it at a freshly signed URL.
    var popup = window.open('', 'b24app-bank-link', 'width=560,height=760,menubar=no,toolbar=no');
    if (!popup) { flash(T.popup_blocked, 'danger'); return; }
    busy(button, true);
    api('POST', cfg.link, {}).then(function (res) {
      busy(button, false);
      if (res.status !== 200 || !res.data || !res.data.url) { popup.close(); return; }
      popup.location.href = res.data.url;
      flash(T.linking, 'info');
      var timer = setInterval(function () {
        refresh(false);
        if (popup.closed) { clearInterval(timer); refresh(true); flash(''); }
      }, 2000);
    });
  }

  // -- actions ------------------------------------------------------------------------------------------
  function assign(form) {
    var select = form.querySelector('select[name="invoice"]');
    var button = form.querySelector('button[type="submit"]');
    if (!select || !select.value) { flash(T.choose_invoice, 'warning'); return; }
    var over = form.querySelector('input[name="pay_over"]');
    var paid = select.selectedOptions[0] && select.selectedOptions[0].getAttribute('data-paid') === '1';
    if (paid && !(over && over.checked)) { flash(T.confirm_pay_over, 'warning'); return; }
    busy(button, true);
    api('POST', cfg.assign, {operation: parseInt(form.getAttribute('data-operation'), 10),
                             invoice: parseInt(select.value, 10), pay_over: !!(paid && over && over.checked)})
      .then(function (res) {
        busy(button, false);
        if (res.status === 200) { flash(res.data.message || T.assigned, 'success'); refresh(true); }
      });
  }
  function undo(button) {
    if (button.getAttribute('data-armed') !== '1') {      // two-step: no browser dialogs inside Bitrix24
      button.setAttribute('data-armed', '1');
      button.setAttribute('data-label', button.textContent);
      button.textContent = button.getAttribute('data-confirm') || button.textContent;
      button.classList.add('ui-btn-danger');
      setTimeout(function () {
        if (button.isConnected && button.getAttribute('data-armed') === '1') {
          button.setAttribute('data-armed', '0');
          button.textContent = button.getAttribute('data-label');
          button.classList.remove('ui-btn-danger');
        }
      }, 5000);
      return;
    }
    busy(button, true);
    api('POST', cfg.undo, {operation: parseInt(button.getAttribute('data-operation'), 10)}).then(function (res) {
      busy(button, false);
      if (res.status === 200) { flash(res.data.message || T.undone, 'success'); refresh(true); }
    });
  }

  document.addEventListener('click', function (e) {
    var el = e.target.closest('[data-action]');
    if (!el || el.tagName === 'FORM') return;
    var action = el.getAttribute('data-action');
    if (action === 'check') { e.preventDefault(); syncNow(el); }
    else if (action === 'link') { e.preventDefault(); linkBank(el); }
    else if (action === 'undo') { e.preventDefault(); undo(el); }
    else if (admin[action]) { e.preventDefault(); admin[action](el); }
  });
  document.addEventListener('submit', function (e) {
    var form = e.target;
    var action = form.getAttribute('data-action');
    if (!action) return;
    e.preventDefault();
    if (action === 'assign') assign(form);
    else if (admin[action]) admin[action](form);
  });
  document.addEventListener('toggle', function () { fit(); }, true);   // <details> opening
  document.addEventListener('change', function (e) {   // a paid invoice chosen: ask for "pay over"
    var select = e.target;
    if (!select.matches || !select.matches('form[data-action="assign"] select[name="invoice"]')) return;
    var box = select.form.querySelector('[data-pay-over]');
    var paid = select.selectedOptions[0] && select.selectedOptions[0].getAttribute('data-paid') === '1';
    if (box) { box.hidden = !paid; if (!paid) box.querySelector('input').checked = false; }
    fit();
  });

  // -- admin page -------------------------------------------------------------------------------------
  var admin = {};
  if (root && root.getAttribute('data-page') === 'admin') {
    var loadInto = function (url, targetId, params) {
      var qs = new URLSearchParams(params || {}).toString();
      return api('GET', url + (qs ? '?' + qs : '')).then(function (res) {
        if (res.status === 200 && res.data && typeof res.data.html === 'string') {
          document.getElementById(targetId).innerHTML = res.data.html;
          fit();
        }
        return res;
      });
    };
    var formParams = function (form) {
      var out = {};
      new FormData(form).forEach(function (v, k) { if (String(v).trim() !== '') out[k] = v; });
      return out;
    };
    var reloadAll = function () {
      return Promise.all([
        loadInto(cfg.urls.review, 'review-list', formParams(document.getElementById('review-search'))),
        loadInto(cfg.urls.history, 'history-list', formParams(document.getElementById('history-filter'))),
        loadBank()]);
    };
    var loadBank = function () {
      return loadInto(cfg.urls.bank, 'bank-card', {}).then(function (res) {
        var box = document.getElementById('first-run-box');
        if (box && res.status === 200 && res.data && typeof res.data.checklist === 'string') {
          box.innerHTML = res.data.checklist;
          fit();
        }
        return res;
      });
    };
    cfg.assign = cfg.urls.assign;
    cfg.undo = cfg.urls.undo;
    cfg.link = cfg.urls.link;
    cfg.sync = cfg.urls.sync;
    refresh = function () { return reloadAll(); };

    admin.close = function (form) {
      var choice = form.querySelector('input[name="action"]:checked');
      var button = form.querySelector('button[type="submit"]');
      busy(button, true);
      api('POST', cfg.urls.close, {operation: parseInt(form.getAttribute('data-operation'), 10),
                                   action: choice ? choice.value : '', reason: form.querySelector('[name="reason"]').value})
        .then(function (res) {
          busy(button, false);
          if (res.status === 200) { flash(res.data.message, 'success'); reloadAll(); }
        });
    };
    // Tabs (Bank, Review, Rules, History): one panel at a time; #hash and [data-tab-link] links pick it.
    var showTab = function (name) {
      var panels = document.querySelectorAll('.b24-tabpanel[data-tab]');
      var known = Array.prototype.some.call(panels, function (p) { return p.getAttribute('data-tab') === name; });
      if (!known) return false;
      panels.forEach(function (p) { p.hidden = p.getAttribute('data-tab') !== name; });
      document.querySelectorAll('.b24-tabs [data-tab-link]').forEach(function (a) {
        a.setAttribute('aria-selected', a.getAttribute('data-tab-link') === name ? 'true' : 'false');
      });
      fit();
      return true;
    };
    var tabs = document.querySelector('.b24-tabs');
    if (tabs) {
      if (!showTab((window.location.hash || '').slice(1))) showTab(tabs.getAttribute('data-open') || 'bank');
      document.addEventListener('click', function (e) {
        var link = e.target.closest && e.target.closest('[data-tab-link]');
        if (!link) return;
        e.preventDefault();
        var name = link.getAttribute('data-tab-link');
        if (showTab(name) && window.history && window.history.replaceState) {
          window.history.replaceState(null, '', '#' + name);
        }
      });
    }

    admin.accept = function (button) {   // the app's proposal (INN and amount), one click
      busy(button, true);
      api('POST', cfg.urls.accept, {operation: parseInt(button.getAttribute('data-operation'), 10)})
        .then(function (res) {
          busy(button, false);
          if (res.status === 200) { flash(res.data.message, 'success'); refresh(true); }
        });
    };
    admin.partial = function () {   // the invoice funnels, to choose the "partly paid" stage (#15)
      loadInto(cfg.urls.partial, 'partial-stages', {});
    };
    admin.partialCreate = function (button) {
      busy(button, true);
      api('POST', cfg.urls.partial_create, {category_id: parseInt(button.getAttribute('data-funnel'), 10)})
        .then(function (res) {
          busy(button, false);
          if (res.status === 200 && res.data) {
            document.getElementById('partial-stages').innerHTML = res.data.html; flash(T.saved, 'success'); fit();
          }
        });
    };
    admin.credits = function () { loadInto(cfg.urls.credits, 'credits-list', {}); };   // the clients' credit (#15)
    var creditPost = function (button, url, body) {
      busy(button, true);
      api('POST', url, body).then(function (res) {
        busy(button, false);
        if (res.status === 200 && res.data) {
          document.getElementById('credits-list').innerHTML = res.data.html;
          flash(res.data.message, 'success'); fit();
        }
      });
    };
    admin.paidField = function (button) {   // the deal's «Оплачено» money field (#15)
      busy(button, true);
      api('POST', cfg.urls.paid_field, {}).then(function (res) {
        busy(button, false);
        if (res.status === 200 && res.data) { flash(res.data.message, 'success'); button.remove(); }
      });
    };
    admin.creditApply = function (button) {
      creditPost(button, cfg.urls.credit_apply, {inn: button.getAttribute('data-inn'),
                                                 currency: button.getAttribute('data-currency')});
    };
    admin.creditUndo = function (button) {
      creditPost(button, cfg.urls.credit_undo, {credit: parseInt(button.getAttribute('data-credit'), 10)});
    };
    admin.search = function (form) { loadInto(cfg.urls.review, 'review-list', formParams(form)); };
    admin.history = function (form) { loadInto(cfg.urls.history, 'history-list', formParams(form)); };
    admin.more = function (button) {
      var params = formParams(document.getElementById('history-filter'));
      params.before = button.getAttribute('data-before');
      api('GET', cfg.urls.history + '?' + new URLSearchParams(params).toString()).then(function (res) {
        if (res.status === 200 && res.data) {
          var wrap = document.createElement('div');
          wrap.innerHTML = res.data.html;
          var list = document.getElementById('history-list');
          button.closest('.b24-more').remove();
          while (wrap.firstChild) list.appendChild(wrap.firstChild);
          fit();
        }
      });
    };
    admin.rules = function (form) {
      var data = {paid_deal_stage: {}};
      form.querySelectorAll('input[type="checkbox"][data-rule]').forEach(function (box) {
        data[box.name] = box.checked;
      });
      form.querySelectorAll('select[data-pipeline]').forEach(function (sel) {
        data.paid_deal_stage[sel.getAttribute('data-pipeline')] = sel.value;
      });
      var funnels = form.querySelectorAll('select[data-invoice-funnel]');
      if (funnels.length) {
        data.partial_invoice_stage = {};
        funnels.forEach(function (sel) { data.partial_invoice_stage[sel.getAttribute('data-invoice-funnel')] = sel.value; });
      }
      var cats = form.querySelector('[name="ignore_categories"]');
      if (cats) data.ignore_categories = cats.value;
      var interval = form.querySelector('[name="sync_interval"]');
      if (interval) data.sync_interval = interval.value.trim() === '' ? 0 : parseInt(interval.value, 10);
      var button = form.querySelector('button[type="submit"]');
      busy(button, true);
      api('POST', cfg.urls.rules, data).then(function (res) {
        busy(button, false);
        if (res.status === 200) { flash(T.saved, 'success'); loadBank(); }
      });
    };
    admin.backfill = function (form) {
      var days = parseInt(form.querySelector('[name="days"]').value, 10);
      syncNow(form.querySelector('button[type="submit"]'), {days: days});
    };
    admin.watch = function (box) {
      var ids = [];
      document.querySelectorAll('input[data-account]').forEach(function (b) {
        if (b.checked) ids.push(parseInt(b.getAttribute('data-account'), 10));
      });
      box.disabled = true;
      api('POST', cfg.urls.accounts, {watched: ids}).then(function (res) {
        box.disabled = false;
        if (res.status === 200) { flash(T.saved, 'success'); loadBank(); }
        else box.checked = !box.checked;
      });
    };
    admin.unlink = function (button) {
      if (button.getAttribute('data-armed') !== '1') {
        button.setAttribute('data-armed', '1');
        button.textContent = button.getAttribute('data-confirm');
        button.classList.add('ui-btn-danger');
        return;
      }
      busy(button, true);
      api('POST', cfg.urls.unlink, {link_id: parseInt(button.getAttribute('data-link'), 10)}).then(function (res) {
        busy(button, false);
        if (res.status === 200) { flash(T.unlinked, 'success'); reloadAll(); }
      });
    };
    admin.stages = function (button) {
      busy(button, true);
      api('POST', cfg.urls.stages, {}).then(function (res) {
        busy(button, false);
        if (res.status === 200 && res.data && res.data.html) {
          document.getElementById('deal-stages').innerHTML = res.data.html;
          fit();
        }
      });
    };
    document.addEventListener('change', function (e) {
      if (e.target.matches && e.target.matches('input[data-account]')) admin.watch(e.target);
    });
    // The assign selector: typing searches the portal's open invoices (number, amount, deal) and refills
    // the list under it; the first offer (this payer's and this deal's invoices) comes with the page.
    var findTimer = null;
    document.addEventListener('input', function (e) {
      var box = e.target;
      if (!box.matches || !box.matches('input[data-invoice-search]')) return;
      if (findTimer) clearTimeout(findTimer);
      findTimer = setTimeout(function () {
        var params = new URLSearchParams({operation: box.getAttribute('data-invoice-search'), q: box.value.trim()});
        api('GET', cfg.urls.invoices + '?' + params.toString()).then(function (res) {
          var select = box.form && box.form.querySelector('select[name="invoice"]');
          if (!select || res.status !== 200 || !res.data) return;
          select.innerHTML = '';
          res.data.invoices.forEach(function (inv) {
            var option = document.createElement('option');
            option.value = String(inv.id);
            option.textContent = inv.label;
            select.appendChild(option);
          });
          if (!res.data.invoices.length) {
            var none = document.createElement('option');
            none.value = '';
            none.textContent = T.nothing_found || '—';
            select.appendChild(none);
          }
          select.setAttribute('data-found', String(res.data.invoices.length));
        });
      }, 250);
    });
  }

  // -- keep the tab current without a reload ------------------------------------------------------------
  // A conditional GET (If-None-Match: the server answers 304 with no body when nothing changed) every
  // cfg.poll ms while the tab is visible, and at once when it becomes visible again; nothing while hidden.
  if (root && root.getAttribute('data-page') === 'widget') {
    document.addEventListener('change', function (e) {   // "no account is watched": an admin ticks one here
      if (!e.target.matches || !e.target.matches('#no-watched input[data-account]') || !cfg.accounts) return;
      var ids = [];
      document.querySelectorAll('#no-watched input[data-account]').forEach(function (b) {
        if (b.checked) ids.push(parseInt(b.getAttribute('data-account'), 10));
      });
      api('POST', cfg.accounts, {watched: ids}).then(function (res) {
        if (res.status === 200) { flash(T.saved, 'success'); refresh(true); }
      });
    });
    var polling = false;
    var poll = function () {
      if (polling || syncing || expired || document.visibilityState !== 'visible') return;
      polling = true;
      refresh(false).then(function () { polling = false; }, function () { polling = false; });
    };
    setInterval(poll, cfg.poll || 2000);
    document.addEventListener('visibilitychange', poll);
  }
  window.b24app = {refresh: function () { return refresh(true); }, fit: fit};
})();
