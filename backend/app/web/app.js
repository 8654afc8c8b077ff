// The voice chat page. Push to talk records a clip (MediaRecorder) and sends it to POST /conversation,
// reading the answer as Server-Sent Events; hands-free streams 16-bit PCM over /ws/conversation,
// where the server detects turns and barge-in. Reply audio is played through Web Audio as it comes.

const $ = (id) => document.getElementById(id);

const KEY_STORAGE = "voice-dialogue.api-key";
const PREFS_STORAGE = "voice-dialogue.prefs";
const WS_SUBPROTOCOL = "voice-dialogue";
const WS_SAMPLE_RATES = [8000, 16000, 22050, 24000, 32000, 44100, 48000];
const RECORDING_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];
const MIN_RECORDING_MS = 300;
const MIC_IDLE_RELEASE_MS = 30000;
const PAGE_SIZE = 20;
const TIMING_LABELS = [
  ["stt_ms", "speech-to-text"],
  ["llm_first_token_ms", "first token"],
  ["llm_ms", "LLM"],
  ["tts_first_audio_ms", "first synthesis"],
  ["tts_ms", "TTS"],
  ["first_audio_ms", "to first audio"],
  ["total_ms", "total"],
];

const state = {
  conversationId: null,
  mode: "ptt",
  voice: "",
  listOffset: 0,
  turn: null, // the push-to-talk or typed turn in flight: {abort: AbortController}
};

// ---------------------------------------------------------------------------------------------
// Server access

class ApiError extends Error {
  constructor(status, code, message, retryAfter = null) {
    super(message);
    this.status = status;
    this.code = code;
    this.retryAfter = retryAfter;
  }
}

function apiKey() {
  return localStorage.getItem(KEY_STORAGE) || "";
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

async function errorFrom(response) {
  let code = "error";
  let message = `${response.status} ${response.statusText}`;
  try {
    const payload = await response.json();
    code = payload.error?.code ?? code;
    message = payload.error?.message ?? message;
  } catch {
    // not our JSON error (a proxy's page): keep the status line
  }
  const retryAfter = Number(response.headers.get("Retry-After")) || null;
  if (response.status === 401) askForKey(apiKey() ? "The API key was refused." : "This server needs an API key.");
  return new ApiError(response.status, code, message, retryAfter);
}

// fetch() with the key, JSON or form bodies, and our error shape turned into ApiError.
async function api(path, { method = "GET", json, form, signal, raw = false } = {}) {
  const headers = authHeaders();
  let body;
  if (json !== undefined) {
    headers["Content-Type"] = "application/json";
    body = JSON.stringify(json);
  } else if (form) {
    body = form;
  }
  let response;
  try {
    response = await fetch(path, { method, headers, body, signal });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    checkHealth(); // shows "Offline" and keeps asking until it is back
    throw new ApiError(0, "network", "The server cannot be reached. Is it running?");
  }
  if (!response.ok) throw await errorFrom(response);
  return raw ? response : response.json();
}

// Server-Sent Events from a fetch() response: yields {event, data} with data parsed as JSON.
async function* readEvents(response) {
  const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value.replace(/\r\n?/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      let event = "message";
      const data = [];
      for (const line of block.split("\n")) {
        if (line.startsWith("event:")) event = line.slice(6).trim();
        else if (line.startsWith("data:")) data.push(line.slice(5).replace(/^ /, ""));
      }
      if (data.length) yield { event, data: JSON.parse(data.join("\n")) };
    }
  }
}

function explain(error) {
  if (error instanceof MicrophoneError) return error.message;
  if (!(error instanceof ApiError)) return `Something went wrong: ${error.message || error}`;
  const wait = error.retryAfter ? ` Try again in ${error.retryAfter} s.` : " Try again shortly.";
  if (error.code === "not_ready") return `The models are still loading.${wait}`;
  if (error.code === "overloaded") return `The server is busy with other requests.${wait}`;
  if (error.status === 503) return `The server cannot answer right now: ${error.message}.${wait}`;
  if (error.status === 401) return "This server needs an API key: enter it in Settings (⚙).";
  if (error.status === 504) return `The server took too long: ${error.message}.`;
  return error.message;
}

function showNotice(message, kind = "error") {
  $("notice-text").textContent = message;
  $("notice").dataset.kind = kind;
  $("notice").hidden = false;
}

function hideNotice() {
  $("notice").hidden = true;
}

function setActivity(text) {
  $("activity").textContent = text;
}

// ---------------------------------------------------------------------------------------------
// Playback: encoded files (push to talk) and PCM16 frames (hands-free), back to back.

class Player {
  constructor() {
    this.ctx = null;
    this.sources = new Set();
    this.nextTime = 0;
    this.decoding = Promise.resolve();
    this.generation = 0;
  }

  // Created (or resumed) from a user gesture: browsers do not let a page start audio on its own.
  context() {
    if (!this.ctx) this.ctx = new AudioContext({ latencyHint: "interactive" });
    if (this.ctx.state === "suspended") this.ctx.resume();
    return this.ctx;
  }

  get playing() {
    return this.sources.size > 0;
  }

  enqueueFile(arrayBuffer, onPlayed) {
    const generation = this.generation;
    this.decoding = this.decoding
      .then(() => this.context().decodeAudioData(arrayBuffer))
      .then((buffer) => {
        if (generation === this.generation) this.schedule(buffer, onPlayed);
      })
      .catch((error) => console.warn("reply audio could not be decoded", error));
  }

  enqueuePcm16(arrayBuffer, sampleRate, onPlayed) {
    const samples = new Int16Array(arrayBuffer, 0, arrayBuffer.byteLength >> 1);
    if (!samples.length) return;
    const buffer = this.context().createBuffer(1, samples.length, sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
    this.schedule(buffer, onPlayed);
  }

  schedule(buffer, onPlayed) {
    const ctx = this.context();
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    const start = Math.max(ctx.currentTime + 0.03, this.nextTime);
    source.start(start);
    this.nextTime = start + buffer.duration;
    this.sources.add(source);
    source.onended = () => {
      this.sources.delete(source);
      onPlayed?.(buffer.duration);
      updatePlaybackControls();
    };
    updatePlaybackControls();
  }

  stop() {
    this.generation += 1;
    for (const source of this.sources) {
      source.onended = null;
      try {
        source.stop();
      } catch {
        // not started yet
      }
    }
    this.sources.clear();
    this.nextTime = 0;
    updatePlaybackControls();
  }
}

const player = new Player();

function updatePlaybackControls() {
  const active = player.playing || state.turn || live.answering;
  $("stop-audio").hidden = !active;
  if (!active && !live.ws && $("activity").textContent.startsWith("Speaking")) setActivity("");
}

async function playUrl(url, view) {
  player.context();
  try {
    const response = await api(url, { raw: true });
    player.stop();
    player.enqueueFile(await response.arrayBuffer(), (seconds) => view?.addPlayed(seconds));
  } catch (error) {
    showNotice(error.status === 404 ? "That audio has expired on the server." : explain(error));
  }
}

function base64ToBuffer(text) {
  const bytes = Uint8Array.from(atob(text), (c) => c.charCodeAt(0));
  return bytes.buffer;
}

// ---------------------------------------------------------------------------------------------
// The transcript

function formatMs(ms) {
  return ms < 1000 ? `${Math.round(ms)} ms` : `${(ms / 1000).toFixed(2)} s`;
}

class MessageView {
  constructor(role, text = "", { pending = false } = {}) {
    const node = $("message-template").content.firstElementChild.cloneNode(true);
    node.classList.add(role);
    node.querySelector(".who").textContent = role === "user" ? "You" : "Assistant";
    this.el = node;
    this.textEl = node.querySelector(".text");
    this.metaEl = node.querySelector(".meta");
    this.played = 0;
    this.text = text;
    this.pending = pending;
    $("messages").append(node);
    $("empty-chat").hidden = true;
    this.scroll();
  }

  get text() {
    return this.textEl.textContent;
  }

  set text(value) {
    this.textEl.textContent = value;
    this.scroll();
  }

  set pending(value) {
    this.el.classList.toggle("pending", value);
    this.el.setAttribute("aria-busy", String(value));
  }

  append(delta) {
    this.text += delta;
  }

  scroll() {
    const chat = $("main");
    chat.scrollTop = chat.scrollHeight;
  }

  note(text) {
    const span = document.createElement("span");
    span.textContent = text;
    this.metaEl.append(span);
    return span;
  }

  addPlayed(seconds) {
    this.played += seconds;
    this.el.dataset.playedSeconds = this.played.toFixed(2);
    if (!this.playedEl) this.playedEl = this.note("");
    this.playedEl.className = "played";
    this.playedEl.textContent = `▶ ${this.played.toFixed(1)} s played`;
  }

  setAudio(url) {
    if (!url || this.el.querySelector(".replay")) return;
    const button = document.createElement("button");
    button.type = "button";
    button.className = "replay";
    button.textContent = "Play again";
    button.setAttribute("aria-label", "Play this reply again");
    button.addEventListener("click", () => playUrl(url, null));
    this.metaEl.prepend(button);
  }

  setTimings(timings) {
    if (!timings || !Object.keys(timings).length) return;
    this.timings = timings;
    this.el.querySelector(".timings")?.remove();
    const list = document.createElement("ul");
    list.className = "timings";
    list.setAttribute("aria-label", "Timings");
    for (const [key, label] of TIMING_LABELS) {
      if (timings[key] === undefined) continue;
      const item = document.createElement("li");
      item.dataset.key = key;
      item.textContent = `${label} ${formatMs(timings[key])}`;
      list.append(item);
    }
    this.el.append(list);
    this.scroll();
  }

  markInterrupted(said) {
    this.pending = false;
    this.el.classList.add("interrupted");
    if (said !== undefined) this.text = said || "…";
    this.note("interrupted");
  }

  fail(message) {
    this.pending = false;
    this.el.classList.add("error");
    if (!this.text) this.text = message;
  }

  // A turn that failed keeps what the user said: one press sends it again.
  offerRetry(send) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "retry";
    button.textContent = "Send again";
    button.addEventListener("click", () => {
      this.el.remove();
      send();
    });
    this.metaEl.append(button);
  }
}

function clearMessages() {
  $("messages").replaceChildren();
  $("empty-chat").hidden = false;
}

// ---------------------------------------------------------------------------------------------
// Microphone

class MicrophoneError extends Error {}

const mic = { stream: null, releaseTimer: null };

async function microphone() {
  clearTimeout(mic.releaseTimer);
  if (mic.stream?.active) return mic.stream;
  if (!window.isSecureContext || !navigator.mediaDevices?.getUserMedia) {
    throw new MicrophoneError(
      "The browser only allows the microphone on a secure page: open this page over HTTPS, " +
        "or as http://localhost on the server itself. You can still type a message.",
    );
  }
  try {
    mic.stream = await navigator.mediaDevices.getUserMedia({
      audio: { echoCancellation: true, noiseSuppression: true, autoGainControl: true, channelCount: 1 },
    });
    return mic.stream;
  } catch (error) {
    const name = error?.name;
    if (name === "NotAllowedError" || name === "SecurityError") {
      throw new MicrophoneError(
        "Microphone access was denied. Allow the microphone for this site (the icon at the left of " +
          "the address bar) and try again, or type a message instead.",
      );
    }
    if (name === "NotFoundError" || name === "OverconstrainedError") {
      throw new MicrophoneError("No microphone was found. Connect one and try again, or type a message.");
    }
    if (name === "NotReadableError") {
      throw new MicrophoneError("The microphone is in use by another program, or the system blocked it.");
    }
    throw new MicrophoneError(`The microphone could not be opened: ${error?.message || name}`);
  }
}

// Push to talk keeps the microphone a little while between presses, then lets it go.
function releaseMicrophoneSoon() {
  clearTimeout(mic.releaseTimer);
  mic.releaseTimer = setTimeout(() => {
    if (live.ws || ptt.recorder) return;
    mic.stream?.getTracks().forEach((track) => track.stop());
    mic.stream = null;
  }, MIC_IDLE_RELEASE_MS);
}

const meter = {
  frame: 0,
  set(peak) {
    $("meter-level").style.width = `${Math.min(100, Math.round(peak * 140))}%`;
  },
  follow(stream) {
    const ctx = player.context();
    const analyser = ctx.createAnalyser();
    analyser.fftSize = 512;
    const source = ctx.createMediaStreamSource(stream);
    source.connect(analyser);
    const samples = new Float32Array(analyser.fftSize);
    const tick = () => {
      analyser.getFloatTimeDomainData(samples);
      let peak = 0;
      for (const sample of samples) peak = Math.max(peak, Math.abs(sample));
      this.set(peak);
      this.frame = requestAnimationFrame(tick);
    };
    tick();
    return () => {
      cancelAnimationFrame(this.frame);
      source.disconnect();
      this.set(0);
    };
  },
};

// ---------------------------------------------------------------------------------------------
// Push to talk: record while held, then one streamed turn over POST /conversation.

const ptt = {
  pressed: false,
  recorder: null,
  chunks: [],
  startedAt: 0,
  stopMeter: null,

  async press() {
    if (this.pressed) return;
    this.pressed = true;
    hideNotice();
    cancelTurn(); // talking over the answer stops it, as on a walkie-talkie
    player.context();
    let stream;
    try {
      stream = await microphone();
    } catch (error) {
      this.pressed = false;
      showNotice(explain(error));
      return;
    }
    if (!this.pressed) {
      // released while the browser asked for permission
      setActivity("The microphone is ready: hold the button while you speak.");
      releaseMicrophoneSoon();
      return;
    }
    const mimeType = RECORDING_TYPES.find((type) => window.MediaRecorder?.isTypeSupported(type));
    try {
      this.recorder = new MediaRecorder(stream, mimeType ? { mimeType } : undefined);
    } catch (error) {
      this.pressed = false;
      showNotice(`This browser cannot record audio: ${error.message}`);
      return;
    }
    this.chunks = [];
    this.recorder.ondataavailable = (event) => event.data.size && this.chunks.push(event.data);
    this.recorder.start();
    this.startedAt = performance.now();
    this.stopMeter = meter.follow(stream);
    setTalkState("recording", "Release to send");
    setActivity("Listening… release to send.");
  },

  async release() {
    if (!this.pressed) return;
    this.pressed = false;
    const recorder = this.recorder;
    if (!recorder) return;
    this.recorder = null;
    const stopped = new Promise((resolve) => recorder.addEventListener("stop", resolve, { once: true }));
    recorder.stop();
    await stopped;
    this.stopMeter?.();
    releaseMicrophoneSoon();
    setTalkState("idle");
    const heldMs = performance.now() - this.startedAt;
    if (heldMs < MIN_RECORDING_MS) {
      setActivity("Hold the button while you speak, then let go.");
      return;
    }
    const blob = new Blob(this.chunks, { type: recorder.mimeType || this.chunks[0]?.type || "audio/webm" });
    await spokenTurn(blob);
  },
};

function extensionFor(type) {
  if (type.includes("mp4")) return "m4a";
  if (type.includes("ogg")) return "ogg";
  return "webm";
}

// A push-to-talk or typed turn in flight: one at a time, cancelled by the next.
function beginTurn() {
  const turn = { abort: new AbortController() };
  state.turn = turn;
  updatePlaybackControls();
  return turn;
}

function finishTurn(turn) {
  if (state.turn === turn) state.turn = null;
  updatePlaybackControls();
  refreshConversations();
}

function cancelTurn() {
  state.turn?.abort.abort();
  state.turn = null;
  player.stop();
}

async function spokenTurn(blob) {
  const form = new FormData();
  form.append("audio_file", blob, `speech.${extensionFor(blob.type)}`);
  form.append("stream", "true");
  form.append("format", "wav");
  if (state.conversationId) form.append("conversation_id", state.conversationId);
  if (state.voice) form.append("voice", state.voice);
  const turn = beginTurn();
  const user = new MessageView("user", "", { pending: true });
  let assistant = null;
  setTalkState("answering"); // holding the button again interrupts the answer
  setActivity("Transcribing…");
  try {
    const response = await api("/conversation", { method: "POST", form, raw: true, signal: turn.abort.signal });
    for await (const { event, data } of readEvents(response)) {
      if (event === "transcript") {
        user.pending = false;
        user.text = data.text || "(nothing was heard)";
        if (!data.text) user.el.classList.add("empty");
        setConversation(data.conversation_id);
        setActivity(data.text ? "Thinking…" : "Nothing was heard: hold the button while you speak.");
      } else if (event === "reply_delta") {
        assistant ??= new MessageView("assistant", "", { pending: true });
        assistant.append(data.text);
      } else if (event === "audio") {
        const view = assistant;
        player.enqueueFile(base64ToBuffer(data.audio), (seconds) => view?.addPlayed(seconds));
        setActivity("Speaking…");
      } else if (event === "done") {
        if (assistant) {
          assistant.pending = false;
          assistant.setTimings(data.timings);
          assistant.setAudio(data.audio_url);
        } else if (data.transcript) {
          user.setTimings(data.timings);
        }
      } else if (event === "error") {
        throw new ApiError(200, data.code, data.message);
      }
    }
    if (state.turn === turn) setActivity(player.playing ? "Speaking…" : "");
  } catch (error) {
    if (error.name === "AbortError") {
      assistant?.markInterrupted();
      if (user.text === "") user.el.remove();
      return;
    }
    const message = explain(error);
    showNotice(message);
    if (!user.text) {
      user.fail("(your recording was not answered)");
      user.offerRetry(() => spokenTurn(blob));
    }
    assistant?.fail(message);
    setActivity("");
  } finally {
    if (!ptt.recorder) setTalkState("idle");
    finishTurn(turn);
  }
}

// A typed message: the reply streams over POST /chat, then is spoken by POST /tts (streamed PCM).
async function typedTurn(text) {
  cancelTurn();
  hideNotice();
  player.context();
  const turn = beginTurn();
  const user = new MessageView("user", text);
  const assistant = new MessageView("assistant", "", { pending: true });
  setActivity("Thinking…");
  const sent = performance.now();
  let replied = false;
  try {
    const body = { text, stream: true };
    if (state.conversationId) body.conversation_id = state.conversationId;
    const response = await api("/chat", { method: "POST", json: body, raw: true, signal: turn.abort.signal });
    let reply = "";
    for await (const { event, data } of readEvents(response)) {
      if (event === "reply_delta") assistant.append(data.text);
      else if (event === "done") {
        reply = data.reply;
        replied = true;
        setConversation(data.conversation_id);
        assistant.setTimings(data.timings);
      } else if (event === "error") throw new ApiError(200, data.code, data.message);
    }
    assistant.pending = false;
    if (reply.trim()) await speak(reply, assistant, turn, sent);
    if (state.turn === turn) setActivity(player.playing ? "Speaking…" : "");
  } catch (error) {
    if (error.name === "AbortError") {
      assistant.markInterrupted();
      return;
    }
    showNotice(explain(error));
    if (replied) {
      assistant.note("not spoken"); // the reply is stored; only its speech failed
    } else {
      assistant.fail(explain(error));
      user.offerRetry(() => {
        assistant.el.remove();
        typedTurn(text);
      });
    }
    setActivity("");
  } finally {
    finishTurn(turn);
  }
}

// The timings of a typed turn are the chat's; `first_audio_ms` is measured here, from sending the
// message to the first audio arriving.
async function speak(text, view, turn, sent) {
  setActivity("Speaking…");
  const body = { text, format: "pcm", stream: true };
  if (state.voice) body.voice = state.voice;
  const response = await api("/tts", { method: "POST", json: body, raw: true, signal: turn.abort.signal });
  const rate = Number(response.headers.get("X-Sample-Rate")) || 24000;
  const reader = response.body.getReader();
  let carry = new Uint8Array(0);
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    const bytes = new Uint8Array(carry.length + value.length);
    bytes.set(carry);
    bytes.set(value, carry.length);
    const even = bytes.length & ~1;
    carry = bytes.slice(even);
    if (!even) continue;
    if (view.timings && view.timings.first_audio_ms === undefined) {
      view.setTimings({ ...view.timings, first_audio_ms: performance.now() - sent });
    }
    player.enqueuePcm16(bytes.slice(0, even).buffer, rate, (seconds) => view.addPlayed(seconds));
  }
}

// ---------------------------------------------------------------------------------------------
// Hands-free: the realtime WebSocket session.

const live = {
  ws: null,
  source: null,
  node: null,
  user: null,
  assistant: null,
  answering: false,
  outputRate: 24000,
  opened: false,
  closing: false,
  starting: false,

  async start() {
    if (this.starting) return;
    this.starting = true;
    try {
      await this.open();
    } finally {
      this.starting = false;
    }
  },

  async open() {
    hideNotice();
    const ctx = player.context();
    try {
      await microphone(); // kept in mic.stream; captured once the server is ready
    } catch (error) {
      showNotice(explain(error));
      return;
    }
    if (!WS_SAMPLE_RATES.includes(ctx.sampleRate)) {
      showNotice(`Hands-free mode cannot use this audio device's rate (${ctx.sampleRate} Hz); use push to talk.`);
      return;
    }
    try {
      await ctx.audioWorklet.addModule(new URL("./pcm-worklet.js", import.meta.url));
    } catch (error) {
      showNotice(`This browser cannot capture audio for hands-free mode (${error.message}); use push to talk.`);
      return;
    }
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    const protocols = [WS_SUBPROTOCOL];
    if (apiKey()) protocols.push(`bearer.${base64Url(apiKey())}`);
    const ws = new WebSocket(`${scheme}//${location.host}/ws/conversation`, protocols);
    ws.binaryType = "arraybuffer";
    this.ws = ws;
    this.opened = false;
    this.closing = false;
    setTalkState("busy", "Stop");
    setActivity("Connecting…");
    ws.onopen = () => {
      this.opened = true;
      const start = { type: "start", sample_rate: ctx.sampleRate };
      if (state.conversationId) start.conversation_id = state.conversationId;
      if (state.voice) start.voice = state.voice;
      ws.send(JSON.stringify(start));
    };
    ws.onmessage = (message) => {
      if (typeof message.data === "string") this.event(JSON.parse(message.data));
      else this.audio(message.data);
    };
    ws.onclose = (event) => this.closed(event);
  },

  capture() {
    const ctx = player.context();
    this.source = ctx.createMediaStreamSource(mic.stream);
    this.node = new AudioWorkletNode(ctx, "pcm-capture", {
      processorOptions: { frameSamples: Math.round(ctx.sampleRate * 0.04) },
    });
    this.node.port.onmessage = ({ data }) => {
      if (this.ws?.readyState === WebSocket.OPEN && !this.closing) this.ws.send(data.pcm);
      meter.set(data.peak);
    };
    this.source.connect(this.node);
    this.node.connect(ctx.destination); // silent: the worklet writes no output
  },

  event(message) {
    switch (message.type) {
      case "ready":
        setConversation(message.conversation_id);
        this.capture();
        setTalkState("listening", "Stop");
        setActivity("Listening: just talk.");
        break;
      case "speech_start":
        setActivity("Hearing you…");
        break;
      case "speech_end":
        setActivity("Thinking…");
        this.answering = true;
        updatePlaybackControls();
        break;
      case "transcript":
        if (message.text) this.user = new MessageView("user", message.text);
        else setActivity("That was not understood as words. Listening.");
        break;
      case "reply_delta":
        this.assistant ??= new MessageView("assistant", "", { pending: true });
        this.assistant.append(message.text);
        break;
      case "audio_start":
        this.outputRate = message.sample_rate;
        setActivity("Speaking… talk to interrupt.");
        break;
      case "turn_end":
        if (this.assistant) {
          this.assistant.pending = false;
          this.assistant.setTimings(message.timings);
          this.assistant.setAudio(message.audio_url);
        }
        this.endTurn();
        if (this.assistant === null && !player.playing) setActivity("Listening: just talk.");
        break;
      case "interrupted":
        player.stop();
        this.assistant?.markInterrupted(message.said);
        this.endTurn();
        setActivity("Interrupted. Listening.");
        break;
      case "error":
        showNotice(explain(new ApiError(0, message.code, message.message)));
        if (this.assistant) this.assistant.fail(message.message);
        this.endTurn();
        break;
      default:
        break; // session_end, and events of later versions
    }
  },

  endTurn() {
    this.user = null;
    this.assistant = null;
    this.answering = false;
    updatePlaybackControls();
    refreshConversations();
  },

  audio(data) {
    const view = this.assistant;
    player.enqueuePcm16(data, this.outputRate, (seconds) => {
      view?.addPlayed(seconds);
      if (!player.playing && !this.answering && this.ws) setActivity("Listening: just talk.");
    });
  },

  interrupt() {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "interrupt" }));
    player.stop();
  },

  stop() {
    if (!this.ws) return;
    this.closing = true;
    this.release();
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(JSON.stringify({ type: "stop" }));
    else this.ws.close();
    setActivity(this.answering ? "Finishing the answer…" : "");
  },

  release() {
    this.source?.disconnect();
    this.node?.port.close();
    this.node?.disconnect();
    this.source = null;
    this.node = null;
    meter.set(0);
  },

  async closed(event) {
    const wasOpened = this.opened;
    this.release();
    this.ws = null;
    this.answering = false;
    this.assistant?.markInterrupted();
    this.assistant = null;
    releaseMicrophoneSoon();
    setTalkState("idle");
    updatePlaybackControls();
    if (!this.closing && !wasOpened) {
      // The handshake failed: find out why with a plain request (a 401 opens Settings).
      try {
        await api("/conversations?limit=1");
        showNotice("The realtime connection could not be opened. Check that the server is reachable.");
      } catch (error) {
        showNotice(explain(error));
      }
    } else if (!this.closing && event.code === 1013) {
      if ($("notice").hidden) showNotice("The server is busy: too many live sessions. Try again shortly.");
    } else if (!this.closing && event.code !== 1000) {
      if ($("notice").hidden) showNotice(`The live session ended (${event.reason || `code ${event.code}`}).`);
    }
    setActivity(this.closing || event.code === 1000 ? "" : $("activity").textContent);
    this.closing = false;
  },
};

function base64Url(text) {
  const bytes = new TextEncoder().encode(text);
  return btoa(String.fromCharCode(...bytes)).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

// ---------------------------------------------------------------------------------------------
// The talk button, the mode and the keyboard

function setTalkState(talkState, label) {
  const button = $("talk");
  button.dataset.state = talkState;
  const idle = state.mode === "ptt" ? "Hold to talk" : "Start";
  button.querySelector(".talk-label").textContent = label ?? idle;
  button.setAttribute("aria-pressed", String(talkState === "recording" || talkState === "listening"));
}

function setMode(mode) {
  if (live.ws) live.stop();
  state.mode = mode;
  savePrefs();
  $("talk-hint").textContent =
    mode === "ptt"
      ? "Hold the button or the space bar while you speak. Enter starts and stops too."
      : "Start, then just talk; pause to let it answer, talk over it to interrupt. Space or Enter starts and stops.";
  setTalkState("idle");
}

function toggleHandsFree() {
  if (live.starting) return;
  if (live.ws) live.stop();
  else live.start();
}

function isTyping(target) {
  return target instanceof HTMLElement && target !== $("talk") && target.closest("input, select, textarea, button, summary, dialog, a");
}

let spaceHeld = false;
let keyboardClickGuard = 0;

function setUpTalkControls() {
  const talk = $("talk");
  talk.addEventListener("pointerdown", (event) => {
    if (event.button !== 0) return;
    if (state.mode !== "ptt") return;
    talk.setPointerCapture(event.pointerId);
    ptt.press();
  });
  const up = () => state.mode === "ptt" && ptt.release();
  talk.addEventListener("pointerup", up);
  talk.addEventListener("pointercancel", up);
  talk.addEventListener("contextmenu", (event) => event.preventDefault());
  talk.addEventListener("click", (event) => {
    if (state.mode === "handsfree") {
      if (performance.now() - keyboardClickGuard > 100) toggleHandsFree();
      return;
    }
    // Enter (a click with no pointer) starts and stops a recording, for those who cannot hold a key.
    if (event.detail === 0 && performance.now() - keyboardClickGuard > 100) {
      if (ptt.pressed) ptt.release();
      else ptt.press();
    }
  });

  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("settings").open) {
      if ($("sidebar").classList.contains("open")) {
        closeSidebar();
        $("toggle-sidebar").focus();
      } else {
        stopSpeaking();
      }
      return;
    }
    if (event.code !== "Space" || isTyping(event.target)) return;
    event.preventDefault();
    if (event.repeat || spaceHeld) return;
    spaceHeld = true;
    if (state.mode === "ptt") ptt.press();
    else toggleHandsFree();
  });
  document.addEventListener("keyup", (event) => {
    if (event.code !== "Space" || !spaceHeld) return;
    event.preventDefault();
    spaceHeld = false;
    keyboardClickGuard = performance.now();
    if (state.mode === "ptt") ptt.release();
  });
  window.addEventListener("blur", () => {
    spaceHeld = false;
    if (ptt.pressed) ptt.release();
  });

  for (const radio of document.querySelectorAll('input[name="mode"]')) {
    radio.addEventListener("change", () => radio.checked && setMode(radio.value));
  }
  $("stop-audio").addEventListener("click", stopSpeaking);
}

function stopSpeaking() {
  if (live.ws) live.interrupt();
  else cancelTurn();
  setActivity("");
  updatePlaybackControls();
}

// ---------------------------------------------------------------------------------------------
// Conversations

function setConversation(id, title) {
  if (!id) return;
  const changed = id !== state.conversationId;
  state.conversationId = id;
  if (title !== undefined) $("conversation-title").textContent = title || "Untitled conversation";
  for (const button of document.querySelectorAll(".conversation-list .open")) {
    button.setAttribute("aria-current", String(button.dataset.id === id));
  }
  if (changed) refreshConversations();
}

function newConversation() {
  if (live.ws) live.stop();
  cancelTurn();
  state.conversationId = null;
  clearMessages();
  $("conversation-title").textContent = "New conversation";
  for (const button of document.querySelectorAll(".conversation-list .open")) {
    button.setAttribute("aria-current", "false");
  }
  closeSidebar();
  $("talk").focus();
}

function describeWhen(seconds) {
  const date = new Date(seconds * 1000);
  const sameDay = date.toDateString() === new Date().toDateString();
  return sameDay
    ? date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })
    : date.toLocaleDateString([], { month: "short", day: "numeric" });
}

let refreshTimer = 0;

function refreshConversations() {
  // Several events may ask at once (a new id, a finished turn): one request will do.
  clearTimeout(refreshTimer);
  refreshTimer = setTimeout(() => loadConversations(false), 150);
}

async function loadConversations(more) {
  const offset = more ? state.listOffset : 0;
  let page;
  try {
    page = await api(`/conversations?limit=${PAGE_SIZE}&offset=${offset}`);
  } catch (error) {
    if (error.status === 404) $("conversations").hidden = true; // a server without stored conversations
    return;
  }
  const list = $("conversation-list");
  if (!more) list.replaceChildren();
  for (const conversation of page.conversations) {
    const item = document.createElement("li");
    const open = document.createElement("button");
    open.type = "button";
    open.className = "open";
    open.dataset.id = conversation.id;
    open.setAttribute("aria-current", String(conversation.id === state.conversationId));
    const title = document.createElement("span");
    title.className = "title";
    title.textContent = conversation.title || "Untitled conversation";
    const when = document.createElement("span");
    when.className = "when";
    when.textContent = `${describeWhen(conversation.updated_at)} · ${conversation.turn_count} messages`;
    open.append(title, when);
    open.addEventListener("click", () => openConversation(conversation.id));
    const remove = document.createElement("button");
    remove.type = "button";
    remove.className = "delete";
    remove.textContent = "✕";
    remove.setAttribute("aria-label", `Delete conversation: ${title.textContent}`);
    remove.addEventListener("click", () => deleteConversation(conversation.id, title.textContent));
    item.append(open, remove);
    list.append(item);
    if (conversation.id === state.conversationId) {
      $("conversation-title").textContent = title.textContent;
    }
  }
  state.listOffset = offset + page.conversations.length;
  $("more-conversations").hidden = state.listOffset >= page.total;
  $("conversations-empty").hidden = page.total > 0;
}

async function openConversation(id) {
  if (live.ws) live.stop();
  cancelTurn();
  hideNotice();
  let detail;
  try {
    detail = await api(`/conversations/${encodeURIComponent(id)}`);
  } catch (error) {
    showNotice(error.status === 404 ? "That conversation no longer exists." : explain(error));
    refreshConversations();
    return;
  }
  clearMessages();
  for (const turn of detail.turns) {
    const view = new MessageView(turn.role, turn.text);
    if (turn.role === "assistant") {
      view.setTimings(turn.timings);
      view.setAudio(turn.audio_url);
      if (turn.interrupted) view.markInterrupted();
    }
  }
  setConversation(detail.id, detail.title);
  closeSidebar();
}

async function deleteConversation(id, title) {
  if (!window.confirm(`Delete the conversation "${title}" and its audio?`)) return;
  try {
    await api(`/conversations/${encodeURIComponent(id)}`, { method: "DELETE" });
  } catch (error) {
    if (error.status !== 404) {
      showNotice(explain(error));
      return;
    }
  }
  if (id === state.conversationId) newConversation();
  loadConversations(false);
}

function closeSidebar() {
  $("sidebar").classList.remove("open");
  $("toggle-sidebar").setAttribute("aria-expanded", "false");
}

// ---------------------------------------------------------------------------------------------
// Voices

async function loadVoices(select) {
  let voices;
  let info;
  try {
    [voices, info] = await Promise.all([api("/voices"), api("/speaker_info")]);
  } catch (error) {
    if (error.status !== 401) showNotice(explain(error));
    return;
  }
  const picker = $("voice-select");
  const wanted = select ?? state.voice;
  picker.replaceChildren(new Option(`Default${voices.default_voice ? ` (${voices.default_voice})` : ""}`, ""));
  for (const voice of voices.voices) {
    const details = [voice.language, voice.gender].filter(Boolean).join(", ");
    const option = new Option(details ? `${voice.name} (${details})` : voice.name, voice.name);
    option.dataset.deletable = String(voice.deletable);
    picker.append(option);
  }
  picker.value = voices.voices.some((voice) => voice.name === wanted) ? wanted : "";
  state.voice = picker.value;
  updateVoiceControls();
  const note = $("voice-note");
  note.hidden = info.supports_cloning;
  note.textContent =
    "This server's speech engine has one built-in voice, so every reply sounds the same; library voices " +
    "are used when the server runs a voice-cloning engine (VibeVoice).";
}

function updateVoiceControls() {
  const option = $("voice-select").selectedOptions[0];
  $("delete-voice").hidden = !(option && option.dataset.deletable === "true");
}

async function uploadVoice(event) {
  event.preventDefault();
  const form = event.target;
  const status = $("voice-form-status");
  status.textContent = "Uploading…";
  status.classList.remove("error-text");
  try {
    const voice = await api("/voices", { method: "POST", form: new FormData(form) });
    form.reset();
    await loadVoices(voice.name);
    savePrefs();
    // Said last, once the new voice is listed and picked.
    status.textContent = `Added ${voice.name} (${voice.duration?.toFixed(1) ?? "?"} s).`;
  } catch (error) {
    status.textContent = explain(error);
  }
}

async function deleteVoice() {
  const name = $("voice-select").value;
  if (!name || !window.confirm(`Delete the voice ${name}?`)) return;
  try {
    await api(`/voices/${encodeURIComponent(name)}`, { method: "DELETE" });
  } catch (error) {
    showNotice(explain(error));
  }
  await loadVoices("");
  savePrefs();
}

// ---------------------------------------------------------------------------------------------
// Settings, health and start-up

function askForKey(reason) {
  const dialog = $("settings");
  $("settings-reason").textContent = reason ?? "";
  $("settings-reason").hidden = !reason;
  $("api-key").value = apiKey();
  if (!dialog.open) dialog.showModal();
}

function setUpSettings() {
  const dialog = $("settings");
  $("open-settings").addEventListener("click", () => askForKey());
  $("forget-key").addEventListener("click", () => {
    localStorage.removeItem(KEY_STORAGE);
    $("api-key").value = "";
  });
  dialog.addEventListener("close", () => {
    if (dialog.returnValue !== "save") return;
    const key = $("api-key").value.trim();
    if (key) localStorage.setItem(KEY_STORAGE, key);
    else localStorage.removeItem(KEY_STORAGE);
    hideNotice();
    loadData();
  });
}

function savePrefs() {
  localStorage.setItem(PREFS_STORAGE, JSON.stringify({ mode: state.mode, voice: state.voice }));
}

function loadPrefs() {
  try {
    const prefs = JSON.parse(localStorage.getItem(PREFS_STORAGE) || "{}");
    if (prefs.mode === "handsfree") {
      document.querySelector('input[name="mode"][value="handsfree"]').checked = true;
      state.mode = "handsfree";
    }
    if (typeof prefs.voice === "string") state.voice = prefs.voice;
  } catch {
    // a damaged entry: the defaults
  }
}

let healthTimer = 0;

async function checkHealth() {
  clearTimeout(healthTimer);
  const pill = $("server-status");
  let health;
  try {
    const response = await fetch("/health", { cache: "no-store" });
    health = await response.json();
  } catch {
    pill.dataset.state = "down";
    pill.textContent = "Offline";
    healthTimer = setTimeout(checkHealth, 5000);
    return;
  }
  const wasReady = pill.dataset.state === "ok";
  pill.dataset.state = health.status;
  if (health.status === "ok") {
    pill.textContent = "Ready";
    pill.title = Object.entries(health.modules)
      .map(([name, module]) => `${name}: ${module.model ?? "?"} (${module.device ?? "?"})`)
      .join("\n");
    if (!wasReady) loadData();
  } else if (health.status === "loading") {
    pill.textContent = "Loading models…";
    healthTimer = setTimeout(checkHealth, 2000);
  } else {
    pill.textContent = "Degraded";
    showNotice(`The server could not load its models: ${health.error ?? "see its log"}.`);
  }
}

function loadData() {
  loadVoices();
  loadConversations(false);
}

function init() {
  loadPrefs();
  setUpTalkControls();
  setUpSettings();
  setMode(state.mode);
  $("notice-close").addEventListener("click", hideNotice);
  $("new-conversation").addEventListener("click", newConversation);
  $("more-conversations").addEventListener("click", () => loadConversations(true));
  $("voice-select").addEventListener("change", (event) => {
    state.voice = event.target.value;
    updateVoiceControls();
    savePrefs();
  });
  $("delete-voice").addEventListener("click", deleteVoice);
  $("voice-form").addEventListener("submit", uploadVoice);
  $("text-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const input = $("text-input");
    const text = input.value.trim();
    if (!text) return;
    input.value = "";
    typedTurn(text);
  });
  $("toggle-sidebar").addEventListener("click", () => {
    const open = $("sidebar").classList.toggle("open");
    $("toggle-sidebar").setAttribute("aria-expanded", String(open));
    if (open) $("new-conversation").focus();
  });
  checkHealth();
}

init();
