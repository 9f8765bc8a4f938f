// The Arena page: one prompt, two anonymous seats streaming side by side, one vote.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  const SEATS = ["a", "b"];
  const VOTED = { a: "You voted: A is better.", b: "You voted: B is better.",
                  tie: "You voted: tie.", bothbad: "You voted: both are bad." };
  const state = { battle: null, controller: null, answered: 0 };
  let showKey = () => {};

  function setStatus(text, isError) {
    $("status").textContent = text || "";
    $("status").classList.toggle("error", Boolean(isError));
  }

  function voteButtons(enabled) {
    document.querySelectorAll("#votes button").forEach((b) => { b.disabled = !enabled; });
  }

  function reset() {
    state.battle = null;
    for (const seat of SEATS) {
      $("name-" + seat).textContent = "Model " + seat.toUpperCase();
      $("seat-" + seat).classList.remove("winner", "loser", "streaming", "revealed");
      const reply = $("reply-" + seat);
      reply.replaceChildren();
      const hint = document.createElement("span");
      hint.className = "placeholder";
      hint.textContent = `The answer of model ${seat.toUpperCase()} appears here.`;
      reply.appendChild(hint);
    }
    document.querySelectorAll("#votes button").forEach((b) => b.classList.remove("chosen"));
    voteButtons(false);
    $("new-round").hidden = true;
    $("arena-prompt").disabled = false;
    $("arena-send").disabled = false;
    setStatus("");
  }

  async function streamSeat(battleId, seat) {
    const box = $("reply-" + seat);
    const card = $("seat-" + seat);
    box.replaceChildren();
    card.classList.add("streaming");
    try {
      const result = await vops.stream(`/arena/battles/${battleId}/${seat}`, null, {
        signal: state.controller.signal, onText: (soFar) => vops.render(box, soFar),
      });
      vops.render(box, result.text || (result.finished ? "(empty answer)" : "(stopped)"));
      return true;
    } catch (error) {
      if (error.status === 401) showKey(error.message);
      vops.render(box, "");
      const note = document.createElement("span");
      note.className = "placeholder error";
      note.textContent = "This answer failed: " + error.message;
      box.appendChild(note);
      return false;
    } finally {
      card.classList.remove("streaming");
    }
  }

  async function fight(prompt) {
    reset();
    $("arena-prompt").disabled = true;
    $("arena-send").hidden = true;
    $("arena-stop").hidden = false;
    setStatus("Both contestants are answering...");
    state.controller = new AbortController();
    try {
      const battle = await vops.postJSON("/arena/battles", { prompt });
      state.battle = battle.battle_id;
      const ok = await Promise.all(SEATS.map((seat) => streamSeat(battle.battle_id, seat)));
      if (ok.every(Boolean)) {
        voteButtons(true);
        setStatus("Which answer is better?");
      } else {
        setStatus("A contestant failed to answer; start a new round.", true);
        $("new-round").hidden = false;
      }
    } catch (error) {
      if (error.status === 401) showKey(error.message);
      setStatus(error.message, true);
      $("arena-prompt").disabled = false;
    } finally {
      state.controller = null;
      $("arena-send").hidden = false;
      $("arena-stop").hidden = true;
    }
  }

  async function vote(outcome) {
    if (!state.battle) return;
    voteButtons(false);
    try {
      const result = await vops.postJSON("/arena/votes", { battle_id: state.battle, outcome });
      for (const seat of SEATS) {
        const who = result.seats[seat];
        $("name-" + seat).textContent = who.label;
        $("name-" + seat).title = `temperature ${who.settings.temperature}, top_p ${who.settings.top_p}`;
        const card = $("seat-" + seat);
        card.classList.add("revealed");
        if (outcome === "a" || outcome === "b") card.classList.add(outcome === seat ? "winner" : "loser");
      }
      document.querySelector(`#votes button[data-outcome="${outcome}"]`).classList.add("chosen");
      setStatus(VOTED[outcome] + " Thanks! The names are shown above.");
      $("new-round").hidden = false;
      $("new-round").focus();
    } catch (error) {
      if (error.status === 401) showKey(error.message);
      setStatus("The vote was not stored: " + error.message, true);
      voteButtons(true); // the server refuses a second vote itself
    }
  }

  document.addEventListener("DOMContentLoaded", async () => {
    showKey = vops.setupKeyBanner(() => setStatus(""));
    $("arena-form").addEventListener("submit", (event) => {
      event.preventDefault();
      const text = $("arena-prompt").value.trim();
      if (!text || state.controller) return;
      fight(text);
    });
    $("arena-prompt").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
        event.preventDefault();
        $("arena-form").requestSubmit();
      }
    });
    $("arena-stop").addEventListener("click", () => state.controller && state.controller.abort());
    document.querySelectorAll("#votes button").forEach((button) =>
      button.addEventListener("click", () => vote(button.dataset.outcome)));
    $("new-round").addEventListener("click", () => {
      reset();
      $("arena-prompt").value = "";
      $("arena-prompt").focus();
    });
    await vops.loadConfig();
    $("system-line").textContent = "System: " + vops.config.system_prompt;
    if (vops.config.api_key_required && !vops.apiKey()) showKey();
    $("arena-prompt").focus();
  });
})();
