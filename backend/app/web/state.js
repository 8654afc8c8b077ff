// The page's shared state and constants, and the one DOM helper every module uses.

export const $ = (id) => document.getElementById(id);

export const KEY_STORAGE = "voice-dialogue.api-key";

export const PREFS_STORAGE = "voice-dialogue.prefs";

export const WS_SUBPROTOCOL = "voice-dialogue";

export const WS_SAMPLE_RATES = [8000, 16000, 22050, 24000, 32000, 44100, 48000];

export const RECORDING_TYPES = ["audio/webm;codecs=opus", "audio/ogg;codecs=opus", "audio/mp4", "audio/webm"];

export const MIN_RECORDING_MS = 300;

export const MIC_IDLE_RELEASE_MS = 30000;

export const PAGE_SIZE = 20;

export const TIMING_LABELS = [
  ["stt_ms", "speech-to-text"],
  ["llm_first_token_ms", "first token"],
  ["llm_ms", "LLM"],
  ["tts_first_audio_ms", "first synthesis"],
  ["tts_ms", "TTS"],
  ["first_audio_ms", "to first audio"],
  ["total_ms", "total"],
];

export const state = {
  conversationId: null,
  mode: "ptt",
  voice: "",
  listOffset: 0,
  turn: null, // the push-to-talk or typed turn in flight: {abort: AbortController}
};
