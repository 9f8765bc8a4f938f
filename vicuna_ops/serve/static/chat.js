// The chat page: pick a model, talk to it turn by turn, replies streamed, a stop button.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const state = { messages: [], controller: null };
  let showKey = () => {};

  function setStatus(text, isError) {
    $("status").textContent = text || "";
    $("status").classList.toggle("error", Boolean(isError));
  }

  function systemPrompt() {
    return $("system-prompt").value.trim() || vops.config.system_prompt;
  }

  function showSystemLine() {
    $("system-line").textContent = "System: " + systemPrompt();
  }

  function addBubble(role, text, label) {
    $("empty").hidden = true;
    const row = document.createElement("div");
    row.className = "msg " + role;
    if (label) {
      const who = document.createElement("div");
      who.className = "who";
      who.textContent = label;
      row.appendChild(who);
    }
    const bubble = document.createElement("div");
    bubble.className = "bubble";
    vops.render(bubble, text);
    row.appendChild(bubble);
    $("messages").appendChild(row);
    row.scrollIntoView({ block: "end" });
    return { row, bubble };
  }

  async function loadModels() {
    const select = $("model");
    const chosen = select.value;
    try {
      const reply = await fetch("/v1/models", { headers: vops.headers() });
      if (reply.status === 401) {
        showKey(await vops.errorMessage(reply));
        return;
      }
      if (!reply.ok) throw new Error(await vops.errorMessage(reply));
      const names = (await reply.json()).data.map((m) => m.id);
      select.replaceChildren(...names.map((name) => new Option(name, name)));
      if (names.includes(chosen)) select.value = chosen;
      setStatus(names.length ? "" : "No model is served yet.", !names.length);
    } catch (error) {
      setStatus("Cannot list the models: " + error.message, true);
    }
  }

  function busy(on) {
    $("send").hidden = on;
    $("stop").hidden = !on;
    $("model").disabled = on;
    $("prompt").disabled = false;
  }

  async function send(text) {
    const model = $("model").value;
    if (!model) { setStatus("Pick a model first.", true); return; }
    state.messages.push({ role: "user", content: text });
    addBubble("user", text);
    const { row, bubble } = addBubble("assistant", "", model);
    row.classList.add("streaming");
    state.controller = new AbortController();
    busy(true);
    setStatus("");
    const body = {
      model, stream: true,
      messages: [{ role: "system", content: systemPrompt() }, ...state.messages],
      temperature: Number($("temperature").value),
      max_tokens: Math.max(1, Math.round(Number($("max-tokens").value) || 1024)),
    };
    try {
      const result = await vops.stream("/v1/chat/completions", body, {
        signal: state.controller.signal,
        onText: (soFar) => { vops.render(bubble, soFar); row.scrollIntoView({ block: "end" }); },
      });
      vops.render(bubble, result.text);
      state.messages.push({ role: "assistant", content: result.text });
      if (!result.finished) {
        row.classList.add("stopped");
        setStatus("Stopped. The partial reply stays in the conversation.");
      }
    } catch (error) {
      state.messages.pop(); // the turn failed: it is not part of the conversation
      row.remove();
      if (error.status === 401) showKey(error.message);
      setStatus(error.message, true);
    } finally {
      row.classList.remove("streaming");
      state.controller = null;
      busy(false);
      $("prompt").focus();
    }
  }

  function newChat() {
    if (state.controller) state.controller.abort();
    state.messages = [];
    $("messages").replaceChildren($("empty"));
    $("empty").hidden = false;
    setStatus("");
    $("prompt").focus();
  }

  document.addEventListener("DOMContentLoaded", async () => {
    showKey = vops.setupKeyBanner(loadModels);
    $("composer").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("prompt").value.trim();
      if (!text || state.controller) return;
      $("prompt").value = "";
      $("prompt").style.height = "";
      send(text);
    });
    $("prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("composer").requestSubmit();
      }
    });
    $("prompt").addEventListener("input", () => {
      const box = $("prompt");
      box.style.height = "";
      box.style.height = Math.min(box.scrollHeight, 200) + "px";
    });
    $("stop").addEventListener("click", () => state.controller && state.controller.abort());
    $("new-chat").addEventListener("click", newChat);
    $("system-prompt").addEventListener("input", showSystemLine);
    $("reset-system").addEventListener("click", () => {
      $("system-prompt").value = vops.config.system_prompt;
      showSystemLine();
    });
    await vops.loadConfig();
    $("system-prompt").value = vops.config.system_prompt;
    showSystemLine();
    if (vops.config.api_key_required && !vops.apiKey()) showKey();
    else await loadModels();
    $("prompt").focus();
  });
})();
