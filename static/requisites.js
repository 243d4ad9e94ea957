/* The link form's instant check: the INN's check digits and the KPP's shape, the same rules as
   b24app/domain/requisites.py (the server checks again). Shows the error in red under the field. */
(function () {
  'use strict';
  var form = document.getElementById('requisites');
  if (!form) return;
  var W10 = [2, 4, 10, 3, 5, 9, 4, 6, 8], W12A = [7, 2, 4, 10, 3, 5, 9, 4, 6, 8], W12B = [3, 7, 2, 4, 10, 3, 5, 9, 4, 6, 8];
  function clean(v) { return String(v || '').replace(/[\s\-\u00a0]/g, ''); }
  function check(digits, w) {
    var sum = 0;
    for (var i = 0; i < w.length; i++) sum += parseInt(digits.charAt(i), 10) * w[i];
    return sum % 11 % 10;
  }
  function innProblem(inn) {
    if (!inn) return 'empty';
    if (!/^(\d{10}|\d{12})$/.test(inn)) return 'format';
    if (/^0+$/.test(inn)) return 'checksum';
    var d = function (i) { return parseInt(inn.charAt(i), 10); };
    var ok = inn.length === 10 ? check(inn, W10) === d(9) :
      check(inn, W12A) === d(10) && check(inn, W12B) === d(11);
    return ok ? '' : 'checksum';
  }
  function kppProblem(kpp, inn) {
    var none = kpp === '' || kpp === '0';
    if (inn.length === 12) return none ? '' : 'sole_trader';
    if (none) return inn.length === 10 ? 'required' : '';
    return /^\d{4}[\dA-Z]{2}\d{3}$/.test(kpp) ? '' : 'format';
  }
  var inn = document.getElementById('inn'), kpp = document.getElementById('kpp');
  function show(input, box, problem) {
    box.setAttribute('data-error', problem);
    box.textContent = problem ? (box.getAttribute('data-msg-' + problem) || '') : '';
    input.setAttribute('aria-invalid', problem ? 'true' : 'false');
  }
  function validate(which) {
    var i = clean(inn.value), k = clean(kpp.value).toUpperCase(), ip = innProblem(i);
    if (which !== 'kpp') show(inn, document.getElementById('inn-error'), ip);
    if (which !== 'inn') show(kpp, document.getElementById('kpp-error'), ip ? '' : kppProblem(k, i));
    return !ip && !(ip ? '' : kppProblem(k, i));
  }
  inn.addEventListener('blur', function () { if (inn.value) validate('inn'); });
  inn.addEventListener('input', function () { if (inn.getAttribute('aria-invalid') === 'true') validate('inn'); });
  kpp.addEventListener('input', function () { if (kpp.getAttribute('aria-invalid') === 'true') validate('kpp'); });
  kpp.addEventListener('blur', function () { if (clean(inn.value)) validate('kpp'); });
  form.addEventListener('submit', function (e) {
    if (!validate()) { e.preventDefault(); (innProblem(clean(inn.value)) ? inn : kpp).focus(); }
  });
})();
