// Shared by the chat and Arena pages: the API key, JSON calls, SSE streams, reply rendering.
// Plain browser JavaScript, no build step, nothing fetched from outside this origin.
"use strict";

const KEY_STORE = "vops.apiKey";

const vops = {
  config: { system_prompt: "", api_key_required: false },

  apiKey() {
    return localStorage.getItem(KEY_STORE) || "";
  },

  headers() {
    const headers = { "content-type": "application/json" };
    const key = vops.apiKey();
    if (key) headers.authorization = "Bearer " + key;
    return headers;
  },

  async loadConfig() {
    const reply = await fetch("/ui/config");
    vops.config = await reply.json();
    return vops.config;
  },

  // The key banner: shown when the server wants a key we do not have, or refused ours.
  setupKeyBanner(onSaved) {
    const banner = document.getElementById("key-banner");
    const input = document.getElementById("api-key");
    const note = document.getElementById("key-note");
    const show = (message) => {
      note.textContent = message || "This server needs an API key.";
      banner.hidden = false;
      input.focus();
    };
    document.getElementById("key-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const key = input.value.trim();
      if (!key) return;
      localStorage.setItem(KEY_STORE, key);
      input.value = "";
      banner.hidden = true;
      onSaved();
    });
    document.getElementById("key-button").addEventListener("click", () =>
      show(vops.apiKey() ? "Replace the stored API key." : "Enter an API key."));
    return show;
  },

  // An error body in OpenAI's shape -> its message.
  async errorMessage(reply) {
    try {
      const body = await reply.json();
      if (body && body.error && body.error.message) return body.error.message;
    } catch (_) { /* not JSON */ }
    return `HTTP ${reply.status}`;
  },

  async postJSON(url, body) {
    const reply = await fetch(url, { method: "POST", headers: vops.headers(), body: JSON.stringify(body) });
    if (!reply.ok) throw new vops.HttpError(reply.status, await vops.errorMessage(reply));
    return reply.json();
  },

  HttpError: class extends Error {
    constructor(status, message) {
      super(message);
      this.status = status;
    }
  },

  // POST and read the server-sent events; onText(fullTextSoFar) after each chunk.
  // Resolves to {text, finished}; "finished" is false when stopped (signal aborted).
  async stream(url, body, { signal, onText }) {
    const reply = await fetch(url, {
      method: "POST", headers: vops.headers(), signal,
      body: body === null ? undefined : JSON.stringify(body),
    });
    if (!reply.ok) throw new vops.HttpError(reply.status, await vops.errorMessage(reply));
    const reader = reply.body.getReader();
    const decoder = new TextDecoder();
    let buffer = "", text = "", finished = false;
    try {
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += decoder.decode(value, { stream: true });
        let cut;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const event = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          for (const line of event.split("\n")) {
            if (!line.startsWith("data: ")) continue;
            const data = line.slice(6);
            if (data === "[DONE]") { finished = true; continue; }
            let chunk;
            try { chunk = JSON.parse(data); } catch (_) { continue; }
            if (chunk.error) throw new vops.HttpError(502, chunk.error.message || "stream failed");
            const choice = (chunk.choices || [])[0];
            const delta = choice && choice.delta && choice.delta.content;
            if (delta) { text += delta; onText(text); }
          }
        }
      }
    } catch (error) {
      if (error.name === "AbortError") return { text, finished: false };
      throw error;
    }
    return { text, finished };
  },

  // Replies as text with ``` code fences and `inline code`; built from DOM nodes, never
  // from HTML strings, so a reply cannot inject markup.
  render(element, text) {
    element.replaceChildren();
    text = text.replace(/^\s+/, ""); // tokenizers often start a reply with a space
    const parts = text.split("```");
    parts.forEach((part, index) => {
      if (index % 2 === 1) {
        const newline = part.indexOf("\n");
        const code = document.createElement("code");
        code.textContent = newline >= 0 && /^[\w+#.-]*$/.test(part.slice(0, newline)) ? part.slice(newline + 1) : part;
        const pre = document.createElement("pre");
        pre.appendChild(code);
        element.appendChild(pre);
        return;
      }
      part.split(/(`[^`\n]+`)/).forEach((piece) => {
        if (piece.length > 2 && piece.startsWith("`") && piece.endsWith("`")) {
          const code = document.createElement("code");
          code.textContent = piece.slice(1, -1);
          element.appendChild(code);
        } else if (piece) {
          element.appendChild(document.createTextNode(piece));
        }
      });
    });
  },
};
