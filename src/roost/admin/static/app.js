// The dashboard's entry point: who is logged in (api.js; the login page if nobody), one live
// feed for the page, and a router over hash routes, so moving between pages never reloads it
// (the charts keep their history).
//
//   #/                        the overview
//   #/t/<topic>               a topic: partitions, subscriptions, consumer groups' lag
//   #/s/<topic>/<name>        a subscription or queue: live charts, partitions, dead letters

import { loadSession, logout } from "./api.js";
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

/** Who is logged in, and a way out when a session cookie is what logged them in. */
function showUser(me) {
  document.getElementById("user").textContent = me.user;
  const button = document.getElementById("logout");
  button.hidden = me.csrf_token === null; // anonymous, or a token: nothing to log out of
  button.addEventListener("click", logout);
}

const me = await loadSession(); // null: on the way to the login page
if (me) {
  showUser(me);
  window.addEventListener("hashchange", show);
  show();
  onSnapshot((snapshot) => {
    updated = new Date(snapshot.at_ms).toLocaleTimeString();
    setState("live");
    view.update(snapshot);
  });
  connect((state) => {
    setState(state);
    // EventSource hides the status of a refused reconnect: ask whether the session ended
    // (it then goes to the login page); a broker that is down just fails the question.
    if (state === "down") loadSession().catch(() => {});
  });
}
