// The dashboard's side of the broker's login: who we are, the session's CSRF token on every
// state-changing request, and the login page whenever the broker says we are not logged in.
//
// The session cookie is HttpOnly: no script here ever sees it. The CSRF token comes in the
// body of GET /session (asked once per page load) and goes back as X-CSRF-Token; it is null
// when no cookie is involved (a broker with no users serves everyone anonymously), and then
// none is sent or needed.

let csrfToken = null;

/** Who the broker says we are ({user, csrf_token}); on a 401, off to the login page (null). */
export async function loadSession() {
  const response = await fetch("session", { headers: { Accept: "application/json" } });
  if (response.status === 401) {
    toLogin();
    return null;
  }
  const me = await response.json();
  csrfToken = me.csrf_token;
  return me;
}

/** The login page; it comes back to this page (its #route kept) once logged in. */
export function toLogin() {
  location.assign(`login${location.hash}`);
}

/** A JSON API call: its answer, or an Error saying the broker's error code and message. */
export async function call(method, url, body) {
  const headers = { Accept: "application/json" };
  if (method !== "GET" && method !== "HEAD") {
    // The broker refuses a state-changing request that is not JSON, body or not (CSRF).
    headers["Content-Type"] = "application/json";
    if (csrfToken) headers["X-CSRF-Token"] = csrfToken;
  }
  const response = await fetch(url, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (response.status === 401) {
    toLogin();
    throw new Error("not logged in");
  }
  const answer = response.status === 204 ? null : await response.json();
  if (!response.ok) throw new Error(`${answer.error.code}: ${answer.error.message}`);
  return answer;
}

/** Ends the session on the broker, then shows the login page. */
export async function logout() {
  try {
    await call("POST", "logout");
  } finally {
    location.assign("login");
  }
}
