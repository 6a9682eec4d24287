// The dashboard's entry point: one live feed for the page, and a router over hash routes, so
// moving between pages never reloads it (the charts keep their history).
//
//   #/                        the overview
//   #/t/<topic>               a topic: partitions, subscriptions, consumer groups' lag
//   #/s/<topic>/<name>        a subscription or queue: live charts, partitions, dead letters

import { connect, latest, onSnapshot } from "./feed.js";
import { overview } from "./overview.js";
import { subscriptionPage } from "./subscription.js";
import { topicPage } from "./topic.js";

const ROUTES = [
  [/^#\/t\/([^/]+)$/, (main, [topic]) => topicPage(main, topic)],
  [/^#\/s\/([^/]+)\/([^/]+)$/, (main, [topic, name]) => subscriptionPage(main, topic, name)],
  [/^/, (main) => overview(main)],
];

const main = document.getElementById("view");
const crumbs = document.getElementById("crumbs");
const status = document.getElementById("status");
let view = null;
let updated = null;

function show() {
  view?.destroy();
  main.replaceChildren();
  for (const [pattern, make] of ROUTES) {
    const found = location.hash.match(pattern);
    if (found) {
      view = make(main, found.slice(1).map(decodeURIComponent));
      break;
    }
  }
  crumbs.replaceChildren(...view.crumbs.flatMap((c) => [" › ", c]));
  window.scrollTo(0, 0);
  const now = latest();
  if (now) view.update(now); // the new page is drawn at once, not at the next snapshot
}

function setState(state) {
  status.dataset.state = state;
  status.textContent = state === "live" ? `live${updated ? ` · ${updated}` : ""}` : "reconnecting…";
}

window.addEventListener("hashchange", show);
show();
onSnapshot((snapshot) => {
  updated = new Date(snapshot.at_ms).toLocaleTimeString();
  setState("live");
  view.update(snapshot);
});
connect(setState);
