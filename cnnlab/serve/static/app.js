// The model's page. Grey models: a canvas to draw on, with undo. Colour models: an image goes in first
// (upload, drag-and-drop, paste, a webcam snapshot). Both: an upload, a strip of validation examples to
// click, and the model's answer from /api/predict (or, with "show why" ticked, from /api/explain, whose
// attribution overlay lies on the input image).
"use strict";

const pad = document.getElementById("pad");
const ctx = pad.getContext("2d");
const LINE_WIDTH = 18; // on the 280-pixel canvas: about MNIST's stroke once scaled to 20 pixels

let classes = [];
let unknownMessage = "that doesn't look like any of the classes";
let strokes = []; // each stroke: a list of [x, y] points in canvas pixels
let current = null;
let background = null; // an uploaded image, drawn under the strokes
let requestId = 0;
let lastRequest = null; // the options of the last image sent, asked again when "show why" changes
let inputCaption = "input";
let colour = false; // a colour model: the image panel instead of the canvas
const explainToggle = document.getElementById("explain-toggle");
const explainMethod = document.getElementById("explain-method");

// With `cnnlab serve --token`, open the page as http://HOST:PORT/#token=TOKEN: the token is kept for
// this tab and sent with every API request.
const fragment = new URLSearchParams(location.hash.slice(1));
if (fragment.has("token")) {
  sessionStorage.setItem("cnnlab-token", fragment.get("token"));
  history.replaceState(null, "", location.pathname + location.search);
}

function api(path, options = {}) {
  const token = sessionStorage.getItem("cnnlab-token");
  const headers = { ...(options.headers || {}) };
  if (token) headers.Authorization = `Bearer ${token}`;
  return fetch(path, { ...options, headers });
}

// ---- drawing ---------------------------------------------------------------------------------

function point(event) {
  const box = pad.getBoundingClientRect();
  return [(event.clientX - box.left) * pad.width / box.width, (event.clientY - box.top) * pad.height / box.height];
}

function drawStroke(stroke) {
  ctx.beginPath();
  if (stroke.length === 1) {
    ctx.arc(stroke[0][0], stroke[0][1], LINE_WIDTH / 2, 0, 2 * Math.PI);
    ctx.fill();
    return;
  }
  ctx.moveTo(stroke[0][0], stroke[0][1]);
  for (const [x, y] of stroke.slice(1)) ctx.lineTo(x, y);
  ctx.stroke();
}

function redraw() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  if (background) {
    const scale = Math.min(pad.width / background.width, pad.height / background.height);
    const w = background.width * scale, h = background.height * scale;
    ctx.imageSmoothingEnabled = scale < 1;
    ctx.drawImage(background, (pad.width - w) / 2, (pad.height - h) / 2, w, h);
  }
  ctx.strokeStyle = ctx.fillStyle = "#000";
  ctx.lineWidth = LINE_WIDTH;
  ctx.lineCap = ctx.lineJoin = "round";
  strokes.forEach(drawStroke);
  if (current) drawStroke(current);
}

pad.addEventListener("pointerdown", (event) => {
  event.preventDefault();
  pad.setPointerCapture(event.pointerId);
  current = [point(event)];
  redraw();
});

pad.addEventListener("pointermove", (event) => {
  if (!current) return;
  current.push(point(event));
  redraw();
});

function endStroke() {
  if (!current) return;
  strokes.push(current);
  current = null;
  redraw();
  predictDrawing();
}

pad.addEventListener("pointerup", endStroke);
pad.addEventListener("pointercancel", endStroke);

document.getElementById("undo").addEventListener("click", () => {
  if (strokes.length) strokes.pop();
  else background = null;
  redraw();
  if (strokes.length || background) predictDrawing();
  else resetResult();
});

document.getElementById("clear").addEventListener("click", () => {
  strokes = [];
  background = null;
  redraw();
  resetResult();
});

document.getElementById("predict").addEventListener("click", predictDrawing);

document.getElementById("upload").addEventListener("change", (event) => {
  const file = event.target.files[0];
  if (file) giveFile(file);
  event.target.value = ""; // the same file chosen again is a new choice
});

// An image file from the upload, a drop, a paste or the webcam: shown, and sent as it is.
function giveFile(file) {
  if (!file.type.startsWith("image/")) {
    say(`error: ${file.name || "that"} is not an image`);
    return;
  }
  showSource(URL.createObjectURL(file));
  const form = new FormData();
  form.append("file", file, file.name || "image.png");
  ask({ method: "POST", body: form });
}

// What was sent, on the first panel: the picture (colour models) or the canvas's background (grey).
function showSource(url) {
  if (colour) {
    document.getElementById("picture").src = url;
    return;
  }
  const image = new Image();
  image.onload = () => { background = image; strokes = []; redraw(); };
  image.src = url;
}

// ---- drop, paste, webcam -----------------------------------------------------------------------

const source = document.getElementById("source");
source.addEventListener("dragover", (event) => {
  event.preventDefault();
  document.getElementById("drop").classList.add("over");
});
source.addEventListener("dragleave", () => document.getElementById("drop").classList.remove("over"));
source.addEventListener("drop", (event) => {
  event.preventDefault();
  document.getElementById("drop").classList.remove("over");
  const file = event.dataTransfer && event.dataTransfer.files[0];
  if (file) giveFile(file);
});

document.addEventListener("paste", (event) => {
  const item = [...(event.clipboardData ? event.clipboardData.items : [])].find((i) => i.type.startsWith("image/"));
  if (!item) return;
  event.preventDefault();
  giveFile(item.getAsFile());
});

const camera = document.getElementById("camera");
document.getElementById("webcam").addEventListener("click", async () => {
  if (camera.srcObject) { stopCamera(); return; }
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    say("error: this browser gives no camera here (open the page as http://localhost or over https)");
    return;
  }
  try {
    camera.srcObject = await navigator.mediaDevices.getUserMedia({ video: true, audio: false });
  } catch (error) {
    say(`error: no camera (${error.message})`);
    return;
  }
  camera.hidden = false;
  document.getElementById("picture").removeAttribute("src");
  document.getElementById("snap").hidden = false;
  document.getElementById("webcam").textContent = "Stop the webcam";
});

document.getElementById("snap").addEventListener("click", () => {
  const still = document.createElement("canvas");
  still.width = camera.videoWidth;
  still.height = camera.videoHeight;
  still.getContext("2d").drawImage(camera, 0, 0);
  stopCamera();
  still.toBlob((blob) => giveFile(new File([blob], "webcam.png", { type: "image/png" })), "image/png");
});

function stopCamera() {
  for (const track of camera.srcObject ? camera.srcObject.getTracks() : []) track.stop();
  camera.srcObject = null;
  camera.hidden = true;
  document.getElementById("snap").hidden = true;
  document.getElementById("webcam").textContent = "Webcam";
}

// ---- validation examples -----------------------------------------------------------------------

async function loadExamples() {
  const response = await api("/api/examples");
  if (!response.ok) return;
  const examples = await response.json();
  const strip = document.getElementById("examples");
  for (const example of examples) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "example";
    button.dataset.label = example.label;
    button.title = `a validation image of ${example.label}`;
    const img = document.createElement("img");
    img.alt = button.title;
    img.src = `data:image/png;base64,${example.image}`;
    button.appendChild(img);
    button.addEventListener("click", () => {
      showSource(img.src);
      ask({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ image: img.src }) });
    });
    strip.appendChild(button);
  }
  document.getElementById("examples-block").hidden = examples.length === 0;
}

// ---- asking the model ------------------------------------------------------------------------

function predictDrawing() {
  if (!strokes.length && !background) {
    say("Draw something first.");
    return;
  }
  const image = pad.toDataURL("image/png");
  ask({ method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ image }) });
}

function endpoint() {
  if (!explainToggle.checked) return "/api/predict";
  return `/api/explain?method=${encodeURIComponent(explainMethod.value)}`;
}

async function ask(options) {
  const id = ++requestId;
  lastRequest = options;
  document.getElementById("result").dataset.state = "busy";
  try {
    const response = await api(endpoint(), options);
    const answer = await response.json();
    if (id !== requestId) return; // a newer drawing was sent meanwhile
    if (!response.ok) throw new Error(answer.detail || response.statusText);
    show(answer);
    say("");
  } catch (error) {
    if (id !== requestId) return;
    document.getElementById("result").dataset.state = "error";
    say(`error: ${error.message}`);
  }
}

// ---- showing the answer ----------------------------------------------------------------------

function say(text) {
  document.getElementById("message").textContent = text;
}

function percent(p) {
  return `${(100 * p).toFixed(1)}%`;
}

function buildBars() {
  const bars = document.getElementById("bars");
  bars.replaceChildren();
  for (const name of classes) {
    const row = document.createElement("div");
    row.className = "bar";
    row.dataset.class = name;
    row.innerHTML = '<span class="name"></span><span class="track"><span class="fill"></span></span><span class="value"></span>';
    row.querySelector(".name").textContent = name;
    bars.appendChild(row);
  }
}

function resetResult() {
  document.getElementById("result").dataset.state = "empty";
  document.getElementById("label").textContent = "–";
  document.getElementById("confidence").textContent = "";
  document.getElementById("verdict").textContent = "";
  delete document.getElementById("result").dataset.unknown;
  for (const row of document.querySelectorAll("#bars .bar")) {
    row.classList.remove("top");
    row.querySelector(".fill").style.width = "0";
    row.querySelector(".value").textContent = "";
  }
  document.getElementById("input-image").removeAttribute("src");
  document.getElementById("overlay-image").removeAttribute("src");
  document.getElementById("input-caption").textContent = inputCaption;
  document.getElementById("maps").replaceChildren();
  lastRequest = null;
  say("");
}

function show(answer) {
  const result = document.getElementById("result");
  result.dataset.state = "done";
  result.dataset.label = answer.label;
  document.getElementById("label").textContent = answer.label;
  document.getElementById("confidence").textContent = percent(answer.probability);
  result.dataset.unknown = answer.unknown ? "true" : "false";  // the run's "none of these" rule
  document.getElementById("verdict").textContent = answer.unknown ? `unknown: ${unknownMessage}` : "";
  for (const row of document.querySelectorAll("#bars .bar")) {
    const p = answer.probabilities[row.dataset.class] || 0;
    row.classList.toggle("top", row.dataset.class === answer.label);
    row.querySelector(".fill").style.width = percent(p);
    row.querySelector(".value").textContent = percent(p);
  }
  const input = document.getElementById("input-image");
  input.src = `data:image/png;base64,${answer.input}`;
  const overlay = document.getElementById("overlay-image");
  if (answer.overlay) overlay.src = answer.overlay;
  else overlay.removeAttribute("src");
  document.getElementById("input-caption").textContent = answer.overlay
    ? `${inputCaption} · ${answer.method}: evidence for ${answer.target}`
    : inputCaption;
  showMaps(answer.feature_maps);
}

function showMaps(layers) {
  const maps = document.getElementById("maps");
  maps.replaceChildren();
  for (const layer of layers) {
    const [channels, h, w] = layer.shape;
    const width = layer.cols * (w + 1) - 1;
    const figure = document.createElement("figure");
    figure.className = "layer";
    const img = document.createElement("img");
    img.className = "pixelated";
    img.alt = `${layer.name} feature maps`;
    img.width = width * Math.max(1, Math.floor(240 / width));
    img.src = `data:image/png;base64,${layer.png}`;
    const caption = document.createElement("figcaption");
    const shown = layer.shown < channels ? ` (first ${layer.shown})` : "";
    caption.textContent = `${layer.name}: ${channels} × ${h} × ${w}${shown}`;
    figure.append(img, caption);
    maps.appendChild(figure);
  }
}

// ---- "show why" -------------------------------------------------------------------------------

function explainChanged() {
  document.body.dataset.explain = explainToggle.checked ? "on" : "off";
  if (lastRequest) ask(lastRequest);
}

explainToggle.addEventListener("change", explainChanged);
explainMethod.addEventListener("change", () => { if (explainToggle.checked) explainChanged(); });

// ---- start -----------------------------------------------------------------------------------

async function start() {
  redraw();
  const response = await api("/api/model");
  const info = await response.json();
  if (!response.ok) throw new Error(response.status === 401 ? "open the page as /#token=YOUR_TOKEN" : info.detail);
  classes = info.classes;
  unknownMessage = info.unknown_message || unknownMessage;
  colour = info.input_shape[0] === 3;
  setUpFirstPanel(info);
  buildBars();
  const accuracy = info.best_val_acc == null ? "" : ` · validation accuracy ${percent(info.best_val_acc)}`;
  const [c, h, w] = info.input_shape;
  document.getElementById("model-info").textContent =
    `${info.model} on ${info.dataset} · ${info.parameters.toLocaleString("en")} parameters · input ${c}×${h}×${w}${accuracy}`;
  inputCaption = `input ${h}×${w}`;
  document.getElementById("input-caption").textContent = inputCaption;
  for (const name of info.explain_methods) {
    const option = new Option(name, name, false, name === info.default_explain_method);
    explainMethod.appendChild(option);
  }
  document.body.dataset.explain = explainToggle.checked ? "on" : "off";
  document.getElementById("preprocessing-note").textContent = info.preprocessing_summary;
  await loadExamples().catch(() => {});
  document.body.dataset.ready = "true";
}

// The page follows the model's data: its title names them; grey models get the canvas, colour models
// the image panel first.
function setUpFirstPanel(info) {
  const data = dataName(info.dataset);
  const digits = info.classes.length === 10 && info.classes.every((name, i) => name === String(i));
  let title;
  if (!colour && digits) title = `draw a digit · ${data}`;
  else if (!colour) title = `draw or give an image · ${data}`;
  else title = `what is in this image? · ${data}`;
  document.title = `cnnlab — ${title}`;
  document.querySelector("header h1").textContent = `cnnlab — ${title}`;
  document.getElementById("source-title").textContent = colour ? "Your image" : "Draw";
  document.getElementById("draw-area").hidden = colour;
  document.getElementById("photo-area").hidden = !colour;
  document.body.dataset.colour = colour ? "true" : "false";
}

// folder:/data/pets → pets; csv:/data/list.csv → list; mnist5k → mnist5k
function dataName(dataset) {
  const [kind, ...rest] = dataset.split(":");
  if (!rest.length || !["folder", "csv"].includes(kind)) return dataset;
  const parts = rest.join(":").split("/").filter(Boolean);
  return (parts.pop() || dataset).replace(/\.csv$/, "");
}

start().catch((error) => say(`error: cannot load the model (${error.message})`));
