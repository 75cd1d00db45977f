// Reader page: window/level on a canvas, keyboard shortcuts, no double submits.
(function () {
  "use strict";
  var form = document.getElementById("answer-form");
  if (!form) return;
  var img = document.getElementById("study-image");
  var canvas = document.getElementById("study-canvas");
  var level = document.getElementById("wl-level");
  var width = document.getElementById("wl-width");
  var readout = document.getElementById("wl-readout");
  var ctx = null, pixels = null, submitting = false;

  // Linear window: output = (v - (L - W/2)) * 255 / (W - 1), clipped; L=128, W=256 is the identity.
  function render() {
    if (!pixels) return;
    var L = Number(level.value), W = Math.max(2, Number(width.value)), lo = L - W / 2;
    var lut = new Uint8ClampedArray(256);
    for (var v = 0; v < 256; v++) lut[v] = Math.round((v - lo) * 255 / (W - 1));
    var out = ctx.createImageData(pixels.width, pixels.height), s = pixels.data, d = out.data;
    for (var i = 0; i < s.length; i += 4) {
      d[i] = lut[s[i]]; d[i + 1] = lut[s[i + 1]]; d[i + 2] = lut[s[i + 2]]; d[i + 3] = 255;
    }
    ctx.putImageData(out, 0, 0);
    readout.textContent = "L " + L + " / W " + W;
  }

  function init() {
    canvas.width = img.naturalWidth;
    canvas.height = img.naturalHeight;
    ctx = canvas.getContext("2d", { willReadFrequently: true });
    ctx.drawImage(img, 0, 0);
    pixels = ctx.getImageData(0, 0, canvas.width, canvas.height);
    img.hidden = true;
    canvas.hidden = false;
    document.getElementById("wl-controls").hidden = false;
    render();
  }

  if (img.complete && img.naturalWidth) init(); else img.addEventListener("load", init);
  level.addEventListener("input", render);
  width.addEventListener("input", render);
  document.getElementById("wl-reset").addEventListener("click", function () {
    level.value = 128; width.value = 256; render();
  });

  function answer(value) {
    if (submitting) return;
    var button = form.querySelector('button[name="answer"][value="' + value + '"]');
    if (form.requestSubmit) form.requestSubmit(button); else button.click();
  }

  form.addEventListener("submit", function () {
    submitting = true;
    // Disable after the form data (which includes the clicked button) has been collected.
    setTimeout(function () {
      form.querySelectorAll("button").forEach(function (b) { b.disabled = true; });
    }, 0);
  });

  document.addEventListener("keydown", function (e) {
    if (e.ctrlKey || e.metaKey || e.altKey) return;
    var t = e.target;
    if (t && (t.tagName === "TEXTAREA" || (t.tagName === "INPUT" && t.type === "text"))) return;
    var k = e.key.toLowerCase();
    if (k === "r") { e.preventDefault(); answer("real"); }
    else if (k === "f") { e.preventDefault(); answer("synthetic"); }
    else if (k.length === 1 && k >= "1" && k <= "5") {
      var radio = form.querySelector('input[name="confidence"][value="' + k + '"]');
      if (radio) radio.checked = true;
    }
  });
})();
