// ESLint's flat config for the browser page's scripts (backend/app/web/, `make lint`): plain ES
// modules run by the browser as they are, no build step. ESLint itself is pinned in package.json
// and package-lock.json and installed into node_modules/ by `make lint`.
import js from "@eslint/js";
import globals from "globals";

export default [
  {
    files: ["backend/app/web/**/*.js"],
    ...js.configs.recommended,
    languageOptions: {
      ecmaVersion: 2024,
      sourceType: "module",
      globals: globals.browser,
    },
    rules: {
      ...js.configs.recommended.rules,
      // Mistakes the recommended set lets through.
      eqeqeq: ["error", "smart"],
      "no-implicit-globals": "error",
      "no-shadow": "error",
      "no-use-before-define": ["error", { functions: false, classes: true, variables: true }],
      "no-var": "error",
      "prefer-const": "error",
    },
  },
  {
    // The microphone's capture runs in the audio rendering thread, which has globals of its own.
    files: ["backend/app/web/pcm-worklet.js"],
    languageOptions: { globals: globals.audioWorklet },
  },
];
