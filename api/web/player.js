// The terminal replay: asciinema-player, served from this server after npm installed it.
// The player cannot send our bearer header, so the page fetches the asciicast itself and hands
// the player the text ({data}: the in-memory equivalent of a Blob URL, nothing to revoke).

import { h } from "./render.js";

let loading = null;

function loadPlayer(prefix) {
  loading ??= new Promise((resolve, reject) => {
    document.head.append(h("link", { rel: "stylesheet", href: `${prefix}/asciinema-player.css` }));
    const failed = () => {
      loading = null;
      reject(new Error("the player script did not load"));
    };
    document.head.append(h("script", {
      src: `${prefix}/asciinema-player.min.js`,
      onload: () => (window.AsciinemaPlayer ? resolve(window.AsciinemaPlayer) : failed()),
      onerror: failed,
    }));
  });
  return loading;
}

function missing(config) {
  return h("div", { class: "player-missing", role: "note" },
    h("strong", {}, "The terminal player is not installed on this server."),
    " The events below still show everything that was recorded; download the .cast file to replay it " +
    `elsewhere. Operators: run ${config.install_player}.`);
}

// Returns the player, or null when it is not available (a message is shown in its place).
export async function mountPlayer(el, castText, config) {
  if (!config.player) {
    el.replaceChildren(missing(config));
    return null;
  }
  let AsciinemaPlayer;
  try {
    AsciinemaPlayer = await loadPlayer(config.player_prefix);
  } catch {
    el.replaceChildren(missing(config));
    return null;
  }
  el.replaceChildren();
  return AsciinemaPlayer.create({ data: castText }, el, { fit: "width", preload: true });
}
