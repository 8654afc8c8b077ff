// Playback: encoded files (push to talk) and PCM16 frames (hands-free), back to back, through Web Audio.

import { t } from "./i18n.js";
import { $, state } from "./state.js";
import { api } from "./server.js";
import { explain, setActivity, showNotice } from "./notices.js";
import { live } from "./hands-free.js";

export class Player {
  constructor() {
    this.ctx = null;
    this.sources = new Set();
    this.nextTime = 0;
    this.decoding = Promise.resolve();
    this.generation = 0;
    this.onCut = null;
  }

  // `cut()` is called if playback is stopped while this audio still plays (not when it ends).
  whenCut(cut) {
    this.onCut = cut;
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

  // `onStart(time, seconds)`: when, on the AudioContext's clock, the audio will start playing.
  enqueueFile(arrayBuffer, onPlayed, onStart) {
    const generation = this.generation;
    this.decoding = this.decoding
      .then(() => this.context().decodeAudioData(arrayBuffer))
      .then((buffer) => {
        if (generation === this.generation) this.schedule(buffer, onPlayed, onStart);
      })
      .catch((error) => console.warn("reply audio could not be decoded", error));
  }

  enqueuePcm16(arrayBuffer, sampleRate, onPlayed, onStart) {
    const samples = new Int16Array(arrayBuffer, 0, arrayBuffer.byteLength >> 1);
    if (!samples.length) return;
    const buffer = this.context().createBuffer(1, samples.length, sampleRate);
    const channel = buffer.getChannelData(0);
    for (let i = 0; i < samples.length; i++) channel[i] = samples[i] / 32768;
    this.schedule(buffer, onPlayed, onStart);
  }

  // Seconds on the AudioContext's clock (0 before it exists).
  now() {
    return this.ctx ? this.ctx.currentTime : 0;
  }

  schedule(buffer, onPlayed, onStart) {
    const ctx = this.context();
    const source = ctx.createBufferSource();
    source.buffer = buffer;
    source.connect(ctx.destination);
    const start = Math.max(ctx.currentTime + 0.03, this.nextTime);
    source.start(start);
    onStart?.(start, buffer.duration);
    this.nextTime = start + buffer.duration;
    this.sources.add(source);
    source.onended = () => {
      this.sources.delete(source);
      if (!this.sources.size) this.onCut = null;
      onPlayed?.(buffer.duration);
      updatePlaybackControls();
    };
    updatePlaybackControls();
  }

  stop() {
    const cut = this.sources.size ? this.onCut : null;
    this.onCut = null;
    cut?.();
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

export const player = new Player();

export function updatePlaybackControls() {
  const active = player.playing || state.turn || live.answering;
  $("stop-audio").hidden = !active;
  if (!active && !live.ws && $("activity").textContent.startsWith(t("Speaking…").slice(0, 2))) setActivity("");
}

export async function playUrl(url, view) {
  player.context();
  try {
    const response = await api(url, { raw: true });
    player.stop();
    player.enqueueFile(await response.arrayBuffer(), (seconds) => view?.addPlayed(seconds));
  } catch (error) {
    showNotice(error.status === 404 ? t("That audio has expired on the server.") : explain(error));
  }
}
