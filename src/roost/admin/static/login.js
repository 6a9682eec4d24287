// The login page: POST /login with the name and password as JSON; the broker answers with a
// session cookie (HttpOnly: this script never sees it), and the dashboard opens at the
// #route it was asked for (the redirect to this page kept it).

const form = document.getElementById("login");
const message = document.getElementById("message");
const submit = form.querySelector("button");

function openDashboard() {
  location.replace(`./${location.hash}`);
}

// Already logged in, or nobody needs to (a broker with no users): go straight on. This also
// catches a link from another site: its first request carries no SameSite=Strict cookie, so
// the broker sent it here, but this request, made by the broker's own page, does.
fetch("session", { headers: { Accept: "application/json" } })
  .then((response) => { if (response.ok) openDashboard(); })
  .catch(() => {}); // the broker is unreachable: the form stays, and says so on submit

form.addEventListener("submit", async (event) => {
  event.preventDefault();
  submit.disabled = true;
  message.textContent = "";
  try {
    const response = await fetch("login", {
      method: "POST",
      headers: { "Content-Type": "application/json", Accept: "application/json" },
      body: JSON.stringify({ username: form.username.value, password: form.password.value }),
    });
    if (response.ok) {
      openDashboard();
      return;
    }
    const { error } = await response.json();
    message.textContent = response.status === 401
      ? "Wrong user name or password." : `${error.code}: ${error.message}`;
    form.password.select();
  } catch (error) {
    message.textContent = `The broker did not answer: ${error}`;
  } finally {
    submit.disabled = false;
  }
});
