// The demo page: the run's model_waveform.tflite in MediaPipe Tasks Audio (WebAssembly), no build step.
// Served by `python -m nsynth_keras.web [RUN]` (or any static server: see README "In the browser").
import { AudioClassifier, FilesetResolver } from "./node_modules/@mediapipe/tasks-audio/audio_bundle.mjs";

const MODEL = "model/model_waveform.tflite";
const INFO = "model/info.json";        // name, labels, input (sample rate, clip) and scores, from the run, by the server
const WASM = "./node_modules/@mediapipe/tasks-audio/wasm";
const LONG_INPUT_S = 8;                // longer than two notes: probably not one isolated note
const SILENT_RMS = 1e-4;               // about -80 dBFS over the clip: nothing to classify

const $ = (id) => document.getElementById(id);
let classifier = null;
let labels = [];
let sampleRate = 16000;                // replaced by info.json's (the model's TFLite Metadata, the run's frontend)
let clipLength = 4 * sampleRate;
let confidenceFloor = null;            // info.json: below this top-1 probability the answer is called a guess
let rows = [];                         // the summary table: one entry per file, in the order chosen
let busy = false;

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
  document.getElementById("families").textContent = labels.join(", ").replaceAll("_", " ");
  if (info.sample_rate) sampleRate = info.sample_rate;
  clipLength = Math.round((info.clip_seconds || 4) * sampleRate);
  confidenceFloor = info.confidence_floor ?? null;
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
  const [result] = classifier.classify(clip, sampleRate);
  return probabilities(result);
}

// The sample rate a file was recorded at, read from its header (the decoder resamples and does not say):
// wav, flac, ogg vorbis/opus and mp3; null where it cannot tell.
function sourceRate(bytes) {
  const v = new DataView(bytes);
  const text = (at, n) => String.fromCharCode(...new Uint8Array(bytes, at, Math.min(n, bytes.byteLength - at)));
  try {
    if (text(0, 4) === "RIFF" && text(8, 4) === "WAVE") {
      for (let at = 12; at + 8 <= bytes.byteLength; at += 8 + v.getUint32(at + 4, true) + (v.getUint32(at + 4, true) & 1)) {
        if (text(at, 4) === "fmt ") return v.getUint32(at + 12, true);
      }
    }
    if (text(0, 4) === "fLaC") return (v.getUint32(18) >>> 12);  // STREAMINFO: 20-bit rate
    if (text(0, 4) === "OggS") {
      const head = text(28, 8);
      if (head.startsWith("\x01vorbis")) return v.getUint32(40, true);
      if (head === "OpusHead") return 48000;  // Opus always decodes at 48 kHz
    }
    let at = text(0, 3) === "ID3" ? 10 + ((v.getUint8(6) << 21) | (v.getUint8(7) << 14) | (v.getUint8(8) << 7) | v.getUint8(9)) : 0;
    for (; at + 4 < Math.min(bytes.byteLength, 1 << 16); at++) {
      if (v.getUint8(at) === 0xff && (v.getUint8(at + 1) & 0xe0) === 0xe0) {
        const version = (v.getUint8(at + 1) >> 3) & 3, index = (v.getUint8(at + 2) >> 2) & 3;
        const base = [11025, 0, 22050, 44100][version];
        if (base && index < 3) return [base, base * 48 / 44.1, base * 32 / 44.1][index];
      }
    }
  } catch (err) { /* a short or odd header: say nothing about the rate */ }
  return null;
}

// Any audio file the browser can decode -> mono samples at the model's rate, and what was done to fit the model.
async function decode(file) {
  if (file.size === 0) throw new Error("empty file (0 bytes)");
  const bytes = await file.arrayBuffer();
  const rate = sourceRate(bytes);
  let buffer;
  try {
    buffer = await new OfflineAudioContext(1, sampleRate, sampleRate).decodeAudioData(bytes.slice(0));
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
  if (rate && rate !== sampleRate) notes.push(`resampled from ${(rate / 1000).toFixed(rate % 1000 ? 1 : 0)} kHz`);
  const seconds = buffer.length / sampleRate;
  const clipSeconds = clipLength / sampleRate;
  if (mono.length < clipLength) notes.push(`${seconds.toFixed(2)} s padded to ${clipSeconds} s`);
  if (mono.length > clipLength) notes.push(`first ${clipSeconds} s of ${seconds.toFixed(1)} s`);
  return { samples: mono, notes, seconds };
}

function firstClip(samples) {
  const clip = new Float32Array(clipLength);
  clip.set(samples.subarray(0, clipLength));
  return clip;
}

function rms(samples) {
  let sum = 0;
  for (let i = 0; i < samples.length; i++) sum += samples[i] * samples[i];
  return Math.sqrt(sum / Math.max(samples.length, 1));
}

function top(probs, k = 3) {
  return probs.map((p, i) => [labels[i], p]).sort((a, b) => b[1] - a[1]).slice(0, k);
}

// Why an answer may not mean much: the input is far from one isolated note.
function warnings(clip, seconds, probs) {
  const out = [];
  if (seconds > LONG_INPUT_S) out.push(`${seconds.toFixed(0)} s long: the model hears single notes of ${clipLength / sampleRate} s, so this is probably not one note`);
  if (rms(clip) < SILENT_RMS) out.push("near silence: there is hardly anything to classify");
  const best = Math.max(...probs);
  if (confidenceFloor !== null && best < confidenceFloor) {
    out.push(`a guess: its top family has ${Math.round(100 * best)}%, below the ${Math.round(100 * confidenceFloor)}% ` +
             "that 9 in 10 test notes it names right reach");
  }
  return out;
}

function card(title, file) {
  const li = document.createElement("li");
  li.className = "item";
  const h = document.createElement("h2");
  h.textContent = title;
  const state = document.createElement("p");
  state.className = "state";
  li.append(h, state);
  if (file) {
    const audio = document.createElement("audio");
    audio.controls = true;
    audio.preload = "none";
    audio.src = URL.createObjectURL(file);
    li.append(audio);
  }
  $("results").append(li);
  return li;
}

function fillResult(li, probs, notes, warned) {
  li.querySelector(".state").remove();
  const audio = li.querySelector("audio");
  for (const [name, p] of top(probs)) {
    const row = document.createElement("div");
    row.className = "guess";
    row.innerHTML = `<span class="name"></span><span class="track"><span class="fill"></span></span>` +
                    `<span class="score"></span>`;
    row.querySelector(".name").textContent = name.replace("_", " ");
    row.querySelector(".fill").style.width = `${(100 * p).toFixed(1)}%`;
    row.querySelector(".score").textContent = `${Math.round(100 * p)}%`;
    li.insertBefore(row, audio);
  }
  for (const text of warned) {
    const p = document.createElement("p");
    p.className = "warning";
    p.textContent = `Careful: ${text}.`;
    li.insertBefore(p, audio);
  }
  if (notes.length) {
    const p = document.createElement("p");
    p.className = "note";
    p.textContent = notes.join("; ");
    li.insertBefore(p, audio);
  }
}

function fillError(li, message) {
  li.querySelector(".state").className = "error";
  li.querySelector(".error").textContent = `Could not classify it: ${message}.`;
}

function showSummary() {
  const table = $("summary");
  const body = table.querySelector("tbody");
  body.replaceChildren(...rows.map((r, i) => {
    const tr = document.createElement("tr");
    const cells = [i + 1, r.file, r.family ?? "-", r.probability === null ? "-" : `${Math.round(100 * r.probability)}%`,
                   r.error || r.warnings.join("; ") || ""];
    for (const value of cells) {
      const td = document.createElement("td");
      td.textContent = value;
      tr.append(td);
    }
    if (r.error) tr.className = "failed";
    return tr;
  }));
  $("summary-box").hidden = rows.length === 0;
}

function csvText() {
  const quote = (v) => (/[",\n]/.test(String(v)) ? `"${String(v).replaceAll('"', '""')}"` : String(v));
  const header = ["file", "family_1", "probability_1", "family_2", "probability_2", "family_3", "probability_3", "warning", "error"];
  const lines = rows.map((r) => [r.file, ...(r.top || []).flatMap(([f, p]) => [f, p.toFixed(4)]),
                                 ...Array(6 - 2 * (r.top || []).length).fill(""), r.warnings.join("; "), r.error || ""]);
  return [header, ...lines].map((line) => line.map(quote).join(",")).join("\n") + "\n";
}

function setControls(enabled) {
  $("files").disabled = !enabled;
  $("choose").classList.toggle("disabled", !enabled);
  $("drop").classList.toggle("disabled", !enabled);
}

async function classifyFiles(files) {
  if (!classifier || busy) return;
  busy = true;
  setControls(false);
  const cards = files.map((file) => card(file.name, file.size ? file : null));
  for (const li of cards) li.querySelector(".state").textContent = "waiting";
  const t0 = performance.now();
  try {
    for (let i = 0; i < files.length; i++) {
      const file = files[i], li = cards[i];
      $("status").textContent = `${i + 1} of ${files.length}: decoding ${file.name}`;
      li.querySelector(".state").textContent = "decoding…";
      await new Promise((resolve) => setTimeout(resolve, 0));  // let the page paint the progress
      const row = { file: file.name, family: null, probability: null, top: null, warnings: [], error: null };
      try {
        const { samples, notes, seconds } = await decode(file);
        li.querySelector(".state").textContent = "classifying…";
        $("status").textContent = `${i + 1} of ${files.length}: classifying ${file.name}`;
        const clip = firstClip(samples);
        const probs = classifyClip(clip);
        row.top = top(probs);
        [row.family, row.probability] = row.top[0];
        row.warnings = warnings(clip, seconds, probs);
        fillResult(li, probs, notes, row.warnings);
      } catch (err) {
        row.error = err.message;
        fillError(li, err.message);
      }
      rows.push(row);
      showSummary();
    }
    const failed = rows.filter((r) => r.error).length;
    $("status").textContent = `${files.length} file${files.length === 1 ? "" : "s"} classified in ` +
      `${((performance.now() - t0) / 1000).toFixed(1)} s (${rows.length} in all${failed ? `, ${failed} could not be read` : ""})`;
  } finally {
    busy = false;
    setControls(true);
  }
}

function clearResults() {
  for (const audio of document.querySelectorAll("#results audio")) URL.revokeObjectURL(audio.src);
  $("results").replaceChildren();
  rows = [];
  showSummary();
  $("status").textContent = "";
}

function downloadCsv() {
  const url = URL.createObjectURL(new Blob([csvText()], { type: "text/csv" }));
  const a = document.createElement("a");
  a.href = url;
  a.download = "families.csv";
  a.click();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

// Back-to-back windows of a recording (as predict --hop 4 and MediaPipe's stream mode).
function classifyWindows(samples) {
  const out = [];
  for (let start = 0; start + clipLength <= samples.length; start += clipLength) {
    out.push({ start: start / sampleRate, probs: classifyClip(samples.slice(start, start + clipLength)) });
  }
  return out;
}

let listening = null;
async function stopMicrophone() {
  const { stream, context, timer } = listening;
  listening = null;
  clearInterval(timer);
  stream.getTracks().forEach((t) => t.stop());
  await context.close();
  $("mic").textContent = "Listen to the microphone";
  $("mic").classList.remove("live");
  $("mic-live").hidden = true;
}

async function toggleMicrophone() {
  if (listening) return stopMicrophone();
  if (!navigator.mediaDevices?.getUserMedia) {
    throw new Error("this browser gives this page no microphone access (it needs https or localhost)");
  }
  let stream;
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: false, noiseSuppression: false, autoGainControl: false } });
  } catch (err) {
    if (err.name === "NotAllowedError") {
      throw new Error("permission denied. Allow the microphone for this page (the icon at the left of the address " +
                      "bar, or the browser's site settings), then press the button again");
    }
    if (err.name === "NotFoundError") throw new Error("no microphone was found: plug one in and press the button again");
    throw err;
  }
  const context = new AudioContext();
  const source = context.createMediaStreamSource(stream);
  const node = context.createScriptProcessor(4096, 1, 1);
  const windowLength = Math.round((clipLength / sampleRate) * context.sampleRate);
  let chunks = [], have = 0, heard = 0;
  node.onaudioprocess = (event) => {
    const data = new Float32Array(event.inputBuffer.getChannelData(0));
    chunks.push(data);
    have += data.length;
    const level = Math.min(1, rms(data) * 8);  // about -18 dBFS fills the meter
    $("level").style.width = `${(100 * level).toFixed(0)}%`;
    if (have >= windowLength) {
      const all = new Float32Array(have);
      let at = 0;
      for (const c of chunks) { all.set(c, at); at += c.length; }
      const clip = all.subarray(0, windowLength);
      const [result] = classifier.classify(clip, context.sampleRate);
      const probs = probabilities(result);
      const li = card(`Microphone, ${heard}-${heard + clipLength / sampleRate} s`);
      fillResult(li, probs, [], warnings(clip, clipLength / sampleRate, probs));
      heard += clipLength / sampleRate;
      chunks = [all.slice(windowLength)];
      have = chunks[0].length;
    }
    listening && (listening.have = have / context.sampleRate);
  };
  source.connect(node);
  node.connect(context.destination);
  listening = { stream, context, have: 0 };
  listening.timer = setInterval(() => {
    const left = Math.max(0, clipLength / sampleRate - (listening?.have ?? 0));
    $("countdown").textContent = `next family in ${left.toFixed(1)} s`;
  }, 100);
  $("mic").textContent = "Stop listening";
  $("mic").classList.add("live");
  $("mic-live").hidden = false;
}

function wireUp() {
  const drop = $("drop");
  $("files").addEventListener("change", (e) => { classifyFiles([...e.target.files]); e.target.value = ""; });
  drop.addEventListener("dragover", (e) => { e.preventDefault(); if (!busy) drop.classList.add("over"); });
  drop.addEventListener("dragleave", () => drop.classList.remove("over"));
  drop.addEventListener("drop", (e) => {
    e.preventDefault();
    drop.classList.remove("over");
    classifyFiles([...e.dataTransfer.files]);
  });
  $("clear").addEventListener("click", clearResults);
  $("csv").addEventListener("click", downloadCsv);
  $("mic").disabled = false;
  $("mic").addEventListener("click", () => toggleMicrophone().then(() => $("status").classList.remove("error"))
    .catch((err) => {
      $("status").textContent = `Microphone: ${err.message}.`;
      $("status").classList.add("error");
    }));
  setControls(true);
}

function describe(info) {
  const parts = [`${info.name} · version ${info.version}`];
  const scores = info.scores || {};
  if (scores.test_accuracy !== undefined) {
    let line = `test accuracy ${Math.round(100 * scores.test_accuracy)}%`;
    if (scores.test_novel_accuracy !== undefined) {
      line += ` (${Math.round(100 * scores.test_novel_accuracy)}% on instruments it has never heard)`;
    }
    parts.push(line);
  }
  parts.push("trained on single isolated notes");
  parts.push(`${labels.length} families: ${labels.join(", ").replaceAll("_", " ")}`);
  return parts.join(" · ");
}

// For tests and the browser check (python -m nsynth_keras.tflite_check --browser): the page's own classifier.
window.nsynth = {
  ready: loadModel().then(({ info, loadMs }) => {
    $("model").textContent = describe(info);
    wireUp();
    return { loadMs, labels };
  }).catch((err) => {
    $("model").textContent = `The model cannot be used: ${err.message}`;
    $("model").classList.add("error");
    throw err;
  }),
  // Classify n clips of clipLength samples stored back to back as float32 at url: probabilities and ms per clip.
  async checkClips(url, n) {
    const samples = new Float32Array(await (await fetch(url)).arrayBuffer());
    const probs = [];
    const t0 = performance.now();
    for (let i = 0; i < n; i++) probs.push(classifyClip(samples.subarray(i * clipLength, (i + 1) * clipLength)));
    return { probs, msPerClip: (performance.now() - t0) / Math.max(n, 1) };
  },
  async checkRecording(url) {
    const samples = new Float32Array(await (await fetch(url)).arrayBuffer());
    const t0 = performance.now();
    const windows = classifyWindows(samples);
    return { windows, msPerWindow: (performance.now() - t0) / Math.max(windows.length, 1) };
  },
  classifyFiles,
  csvText,
  rows: () => rows,
};
