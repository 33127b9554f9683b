// The demo page: the run's model_waveform.tflite in MediaPipe Tasks Audio (WebAssembly), no build step.
// Served by `python -m nsynth_keras.web RUN` (or any static server: see README "In the browser").
import { AudioClassifier, FilesetResolver } from "./node_modules/@mediapipe/tasks-audio/audio_bundle.mjs";

const SAMPLE_RATE = 16000;             // the model's input, from its TFLite Metadata
const CLIP = 4 * SAMPLE_RATE;          // one NSynth note
const MODEL = "model/model_waveform.tflite";
const INFO = "model/info.json";        // name, version and labels read from the model's metadata by the server
const WASM = "./node_modules/@mediapipe/tasks-audio/wasm";

const $ = (id) => document.getElementById(id);
let classifier = null;
let labels = [];

function missingApis() {
  const missing = [];
  if (typeof WebAssembly !== "object") missing.push("WebAssembly");
  if (!window.OfflineAudioContext) missing.push("Web Audio (OfflineAudioContext)");
  return missing;
}

async function loadModel() {
  const missing = missingApis();
  if (missing.length) throw new Error(`this browser lacks ${missing.join(" and ")}; try a current Chrome, Edge, Firefox or Safari`);
  const info = await (await fetch(INFO)).json();
  if (info.error) throw new Error(info.error);
  labels = info.labels;
  const t0 = performance.now();
  const fileset = await FilesetResolver.forAudioTasks(WASM);
  try {
    classifier = await AudioClassifier.createFromOptions(fileset, {
      baseOptions: { modelAssetPath: MODEL }, maxResults: -1, scoreThreshold: 0,
    });
  } catch (err) {
    throw new Error(`the model could not be loaded (${String(err.message || err).split("\n")[0]}): is it a valid ` +
                    "model_waveform.tflite with TFLite Metadata? Re-export it with python -m nsynth_keras.export");
  }
  return { info, loadMs: performance.now() - t0 };
}

// MediaPipe result -> probabilities in label order.
function probabilities(result) {
  const probs = new Array(labels.length).fill(0);
  for (const c of result.classifications[0].categories) probs[c.index] = c.score;
  return probs;
}

function classifyClip(clip) {
  const [result] = classifier.classify(clip, SAMPLE_RATE);
  return probabilities(result);
}

// Any audio file the browser can decode -> 16 kHz mono samples, and what was done to fit the model.
async function decode(file) {
  const bytes = await file.arrayBuffer();
  let buffer;
  try {
    buffer = await new OfflineAudioContext(1, SAMPLE_RATE, SAMPLE_RATE).decodeAudioData(bytes);
  } catch (err) {
    throw new Error("not an audio file this browser can decode");
  }
  const mono = new Float32Array(buffer.length);
  for (let ch = 0; ch < buffer.numberOfChannels; ch++) {
    const data = buffer.getChannelData(ch);
    for (let i = 0; i < data.length; i++) mono[i] += data[i] / buffer.numberOfChannels;
  }
  const notes = [];
  if (buffer.numberOfChannels > 1) notes.push(`${buffer.numberOfChannels} channels mixed to mono`);
  const seconds = buffer.length / SAMPLE_RATE;
  if (mono.length < CLIP) notes.push(`${seconds.toFixed(2)} s padded to 4 s`);
  if (mono.length > CLIP) notes.push(`first 4 s of ${seconds.toFixed(1)} s`);
  return { samples: mono, notes };
}

function firstClip(samples) {
  const clip = new Float32Array(CLIP);
  clip.set(samples.subarray(0, CLIP));
  return clip;
}

function top(probs, k = 3) {
  return probs.map((p, i) => [labels[i], p]).sort((a, b) => b[1] - a[1]).slice(0, k);
}

function showResult(title, probs, note) {
  const li = document.createElement("li");
  li.className = "item";
  const h = document.createElement("h2");
  h.textContent = title;
  li.append(h);
  for (const [name, p] of top(probs)) {
    const row = document.createElement("div");
    row.className = "guess";
    row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span>` +
                    `<span class="score"></span>`;
    row.querySelector(".name").textContent = name.replace("_", " ");
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".score").textContent = `${Math.round(100 * p)}%`;
    li.append(row);
  }
  if (note) {
    const p = document.createElement("p");
    p.className = "note";
    p.textContent = note;
    li.append(p);
  }
  $("results").prepend(li);
}

function showError(title, message) {
  const li = document.createElement("li");
  li.className = "item";
  li.innerHTML = `<h2></h2><p class="error"></p>`;
  li.querySelector("h2").textContent = title;
  li.querySelector(".error").textContent = message;
  $("results").prepend(li);
}

async function classifyFiles(files) {
  for (const file of files) {
    try {
      const { samples, notes } = await decode(file);
      showResult(file.name, classifyClip(firstClip(samples)), notes.join("; "));
    } catch (err) {
      showError(file.name, `Could not classify it: ${err.message}.`);
    }
  }
}

// Back-to-back 4 s windows of a recording (as predict --hop 4 and MediaPipe's stream mode).
function classifyWindows(samples) {
  const out = [];
  for (let start = 0; start + CLIP <= samples.length; start += CLIP) {
    out.push({ start: start / SAMPLE_RATE, probs: classifyClip(samples.slice(start, start + CLIP)) });
  }
  return out;
}

let listening = null;
async function toggleMicrophone() {
  if (listening) {
    listening.stream.getTracks().forEach((t) => t.stop());
    await listening.context.close();
    listening = null;
    $("mic").textContent = "Listen to the microphone";
    $("mic").classList.remove("live");
    return;
  }
  if (!navigator.mediaDevices?.getUserMedia) {
    $("status").textContent = "This browser gives no microphone access to this page (it needs https or localhost).";
    return;
  }
  const stream = await navigator.mediaDevices.getUserMedia({
    audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  const context = new AudioContext();
  const source = context.createMediaStreamSource(stream);
  const node = context.createScriptProcessor(4096, 1, 1);
  const windowLength = Math.round(4 * context.sampleRate);
  let chunks = [], have = 0, heard = 0;
  node.onaudioprocess = (event) => {
    const data = new Float32Array(event.inputBuffer.getChannelData(0));
    chunks.push(data);
    have += data.length;
    if (have >= windowLength) {
      const all = new Float32Array(have);
      let at = 0;
      for (const c of chunks) { all.set(c, at); at += c.length; }
      const [result] = classifier.classify(all.subarray(0, windowLength), context.sampleRate);
      showResult(`Microphone, ${heard}-${heard + 4} s`, probabilities(result));
      heard += 4;
      chunks = [all.slice(windowLength)];
      have = chunks[0].length;
    }
  };
  source.connect(node);
  node.connect(context.destination);
  listening = { stream, context };
  $("mic").textContent = "Stop listening";
  $("mic").classList.add("live");
}

function wireUp() {
  const drop = $("drop");
  $("files").addEventListener("change", (e) => classifyFiles([...e.target.files]));
  drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    classifyFiles([...e.dataTransfer.files]);
  });
  $("mic").disabled = false;
  $("mic").addEventListener("click", () => toggleMicrophone().catch((err) => {
    $("status").textContent = `Microphone: ${err.message}`;
  }));
}

// For tests and the browser check (python -m nsynth_keras.tflite_check --browser): the page's own classifier.
window.nsynth = {
  ready: loadModel().then(({ info, loadMs }) => {
    $("model").textContent = `${info.name} · version ${info.version} · ${labels.length} families: ` +
                             labels.join(", ").replaceAll("_", " ");
    wireUp();
    return { loadMs, labels };
  }).catch((err) => {
    $("model").textContent = `The model cannot be used: ${err.message}`;
    $("model").classList.add("error");
    throw err;
  }),
  // Classify n clips of CLIP samples stored back to back as float32 at url: probabilities and ms per clip.
  async checkClips(url, n) {
    const samples = new Float32Array(await (await fetch(url)).arrayBuffer());
    const probs = [];
    const t0 = performance.now();
    for (let i = 0; i < n; i++) probs.push(classifyClip(samples.subarray(i * CLIP, (i + 1) * CLIP)));
    return { probs, msPerClip: (performance.now() - t0) / Math.max(n, 1) };
  },
  async checkRecording(url) {
    return classifyWindows(new Float32Array(await (await fetch(url)).arrayBuffer()));
  },
  classifyFiles,
};
