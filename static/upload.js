/* The admin page's 1C statement upload (templates/upload/_card.html): drag and drop, XHR upload with progress,
 * the server's preview fragment, then the import, all with the frame token in a header. Without this script the
 * same forms post as plain pages. */
(function () {
  'use strict';

  var form = document.getElementById('upload-form');
  var cfgNode = document.getElementById('b24app-config');
  if (!form || !cfgNode || !window.XMLHttpRequest || !window.FormData) return;
  var token = JSON.parse(cfgNode.textContent).token;
  var input = document.getElementById('upload-file');
  var drop = document.getElementById('upload-drop');
  var bar = document.getElementById('upload-progress');
  var status = document.getElementById('upload-status');
  var answer = document.getElementById('upload-answer');

  function setProgress(percent) {
    bar.hidden = false;
    bar.setAttribute('aria-valuenow', String(percent));
    bar.firstElementChild.style.width = percent + '%';
  }

  function send(url, data, onProgress) {
    var xhr = new XMLHttpRequest();
    xhr.open('POST', url);
    xhr.setRequestHeader('X-Frame-Token', token);
    xhr.setRequestHeader('Accept', 'application/json');
    if (onProgress && xhr.upload) {
      xhr.upload.addEventListener('progress', function (e) {
        if (e.lengthComputable) onProgress(Math.round(100 * e.loaded / e.total));
      });
      xhr.upload.addEventListener('load', function () { onProgress(100); status.textContent = form.dataset.checking; });
    }
    xhr.onload = function () {
      var renewed = xhr.getResponseHeader('X-Frame-Token');
      if (renewed) token = renewed;
      var body = null;
      try { body = JSON.parse(xhr.responseText); } catch (e) { body = null; }
      status.textContent = '';
      if (body && typeof body.html === 'string') {
        answer.innerHTML = body.html;     // rendered and escaped by the server
        wireImport();
      } else {
        status.textContent = (body && body.message) || form.dataset.failed;
      }
      bar.hidden = true;
    };
    xhr.onerror = function () { status.textContent = form.dataset.failed; bar.hidden = true; };
    xhr.send(data);
  }

  function upload(file) {
    var data = new FormData();
    data.append('file', file, file.name);
    answer.innerHTML = '';
    setProgress(0);
    send(form.action, data, function (percent) {
      setProgress(percent);
      status.textContent = form.dataset.sending.replace('{percent}', String(percent));
    });
  }

  function wireImport() {
    var importForm = document.getElementById('import-form');
    if (!importForm) return;
    importForm.addEventListener('submit', function (e) {
      e.preventDefault();
      importForm.querySelector('button[type=submit]').disabled = true;
      status.textContent = form.dataset.checking;
      send(importForm.action, new FormData(importForm), null);
    });
  }

  form.addEventListener('submit', function (e) {
    e.preventDefault();
    if (input.files && input.files[0]) upload(input.files[0]);
  });
  input.addEventListener('change', function () {
    if (input.files && input.files[0]) upload(input.files[0]);
  });
  ['dragenter', 'dragover'].forEach(function (name) {
    drop.addEventListener(name, function (e) { e.preventDefault(); drop.classList.add('b24-drop--over'); });
  });
  ['dragleave', 'drop'].forEach(function (name) {
    drop.addEventListener(name, function () { drop.classList.remove('b24-drop--over'); });
  });
  drop.addEventListener('drop', function (e) {
    e.preventDefault();
    var files = e.dataTransfer && e.dataTransfer.files;
    if (files && files[0]) upload(files[0]);
  });
})();
