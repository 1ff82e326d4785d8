// The conversation on screen: one <li> per turn holding the user's words, the sources, the answer and its timings.

function el(tag, className, text = "") {
  const node = document.createElement(tag);
  node.className = className;
  node.textContent = text;
  return node;
}

function ms(value) {
  if (value == null) return "–";
  return value >= 1000 ? `${(value / 1000).toFixed(2)} s` : `${Math.round(value)} ms`;
}

export class Conversation {
  constructor(list) {
    this.list = list;
    this.current = null;
    this.turns = new Map(); // parley turn_id -> <li>
    this.bubbles = new Map(); // "user:<item_id>" / "assistant:<item_id>" -> element
  }

  newTurn() {
    this.current = el("li", "turn");
    this.list.append(this.current);
    return this.current;
  }

  bubble(role, itemId, { create = true } = {}) {
    const key = `${role}:${itemId}`;
    let node = this.bubbles.get(key);
    if (!node && create) {
      node = el("p", `msg ${role}`);
      (this.current ?? this.newTurn()).append(node);
      this.bubbles.set(key, node);
      node.scrollIntoView({ block: "nearest" });
    }
    return node;
  }

  // The user started speaking: a new turn with a placeholder for their words.
  userSpeaking(itemId) {
    this.newTurn();
    const node = this.bubble("user", itemId);
    node.classList.add("pending");
    node.textContent = "…";
  }

  userText(itemId, text, { final = false, append = false } = {}) {
    const node = this.bubble("user", itemId);
    const before = node.classList.contains("pending") ? "" : node.textContent;
    node.classList.toggle("pending", !final);
    node.textContent = append ? before + text : text;
    if (final && !text.trim()) this.dropUser(itemId);
  }

  dropUser(itemId) {
    const node = this.bubble("user", itemId, { create: false });
    const turn = node?.parentElement;
    node?.remove();
    if (turn && !turn.children.length) {
      turn.remove();
      if (this.current === turn) this.current = null;
    }
  }

  assistantText(itemId, delta) {
    this.bubble("assistant", itemId).textContent += delta;
  }

  interrupted(itemId) {
    this.bubble("assistant", itemId, { create: false })?.classList.add("interrupted");
  }

  // parley.context: the relay is answering the current turn with these knowledge-base passages.
  context(turnId, sources, status) {
    const turn = this.current ?? this.newTurn();
    turn.dataset.turnId = turnId;
    this.turns.set(turnId, turn);
    const box = el("div", "meta sources");
    box.dataset.status = status ?? "";
    if (sources?.length) {
      const list = el("ul", "source-list");
      for (const s of sources) {
        const li = el("li", "source");
        li.title = s.snippet ?? "";
        const name = [s.title || s.source, s.heading].filter(Boolean).join(" › ");
        li.append(el("span", "source-title", name));
        if (s.title && s.source) li.append(el("span", "source-file", ` (${s.source})`));
        list.append(li);
      }
      box.append(list);
    } else {
      const why = { empty: "nothing in the knowledge base", off: "knowledge base off" }[status];
      box.append(el("span", "source-none", why ?? `none (lookup ${status})`));
    }
    turn.append(box);
  }

  // parley.turn: timings relative to the end of the user's speech.
  timings(turnId, t, status) {
    const turn = this.turns.get(turnId) ?? this.current;
    if (!turn) return;
    const line = el(
      "p",
      "meta timings",
      `from end of question: transcript ${ms(t.transcript)} · context ${ms(t.retrieval)} · ` +
        `response ${ms(t.response_created)} · ` +
        `first audio ${ms(t.first_audio)}${status && status !== "completed" ? ` · ${status}` : ""}`,
    );
    line.dataset.firstAudioMs = t.first_audio ?? "";
    turn.append(line);
  }
}
