// Folio operator console. It uses the public HTTP API with an operator session, the
// same step-up and approval flows as any client, and keeps the session token in memory
// only: reloading the page signs the operator out.

const session = { token: null, ledger: null, me: null };
const main = document.getElementById("main");
const message = document.getElementById("message");

/** An API error carrying the problem document's code and detail. */
class ApiProblem extends Error {
  constructor(status, problem) {
    const detail = (problem && (problem.detail || problem.title)) || `HTTP ${status}`;
    super(detail);
    this.status = status;
    this.code = problem && problem.code;
  }
}

/** Builds an element; children are nodes or strings (always inserted as text). */
function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attributes)) {
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (value !== false && value !== null && value !== undefined) node.setAttribute(name, value);
  }
  for (const child of children.flat(Infinity)) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

function show(...nodes) {
  main.replaceChildren(...nodes);
}

function say(text, isError = false) {
  message.textContent = text;
  message.className = isError ? "error" : "";
}

/** Sends one request; JSON bodies in and out, plain text for text responses. */
async function send(method, path, body) {
  const headers = { Accept: "application/json" };
  if (session.token) headers.Authorization = `Bearer ${session.token}`;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method === "POST") headers["Idempotency-Key"] = crypto.randomUUID();
  const response = await fetch(path, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
    cache: "no-store",
  });
  const type = response.headers.get("Content-Type") || "";
  const payload = type.includes("json") ? await response.json() : await response.text();
  return { status: response.status, ok: response.ok, payload };
}

/** Calls the API; a step-up challenge asks for a code and retries once. */
async function api(method, path, body) {
  let reply = await send(method, path, body);
  if (reply.status === 401 && reply.payload && reply.payload.code === "step_up_required") {
    await stepUp();
    reply = await send(method, path, body);
  }
  if (!reply.ok) throw new ApiProblem(reply.status, reply.payload);
  return reply.payload;
}

/** Asks for a TOTP code in the step-up dialog and passes it; rejects on cancel. */
function stepUp() {
  const dialog = document.getElementById("step-up");
  const form = document.getElementById("step-up-form");
  const input = document.getElementById("step-up-code");
  const error = document.getElementById("step-up-error");
  input.value = "";
  error.textContent = "";
  return new Promise((resolve, reject) => {
    const cancel = () => {
      cleanup();
      dialog.close();
      reject(new Error("step-up cancelled; the action was not performed"));
    };
    const submit = async (event) => {
      event.preventDefault();
      const code = input.value.trim();
      const body = code.includes("-") ? { recovery_code: code } : { totp_code: code };
      const reply = await send("POST", "/v1/sessions/current/verification", body);
      if (!reply.ok) {
        error.textContent = new ApiProblem(reply.status, reply.payload).message;
        return;
      }
      cleanup();
      dialog.close();
      resolve();
    };
    const cleanup = () => {
      form.removeEventListener("submit", submit);
      document.getElementById("step-up-cancel").removeEventListener("click", cancel);
    };
    form.addEventListener("submit", submit);
    document.getElementById("step-up-cancel").addEventListener("click", cancel);
    dialog.showModal();
    input.focus();
  });
}

/** Runs an action from a button, reporting its outcome in the status line. */
async function act(description, action) {
  say(`${description}…`);
  try {
    await action();
    say(`${description}: done.`);
    await route();
  } catch (error) {
    say(`${description} failed: ${error.message}`, true);
  }
}

// ---- Formatting -------------------------------------------------------------------

/** Formats integer minor units as a decimal string without floating point. */
function money(minor, currency) {
  const text = String(minor);
  const negative = text.startsWith("-");
  const digits = (negative ? text.slice(1) : text).padStart(3, "0");
  const major = digits.slice(0, -2).replace(/\B(?=(\d{3})+(?!\d))/g, ",");
  return `${negative ? "-" : ""}${major}.${digits.slice(-2)} ${currency || ""}`.trim();
}

function time(micros) {
  if (micros === null || micros === undefined) return "";
  return new Date(Math.floor(Number(micros) / 1000)).toISOString().replace(".000Z", "Z");
}

function table(headers, rows) {
  return el(
    "table",
    {},
    el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))),
    el("tbody", {}, rows.length ? rows : el("tr", {}, el("td", { colspan: headers.length }, "Nothing to show."))),
  );
}

function ledgerPath(suffix) {
  return `/v1/ledgers/${session.ledger}${suffix}`;
}

// ---- Sign-in and enrolment ----------------------------------------------------------

function signInView() {
  document.getElementById("nav").hidden = true;
  document.getElementById("who").textContent = "";
  const params = new URLSearchParams(location.search);
  const ledger = params.get("ledger") || localStorage.getItem("folio.ledger") || "";
  const form = el(
    "form",
    { id: "sign-in", class: "card" },
    el("h2", {}, "Sign in"),
    el("label", {}, "Ledger id", el("input", { name: "ledger", value: ledger, required: true, size: 40 })),
    el("label", {}, "User name", el("input", { name: "username", autocomplete: "username", required: true })),
    el("label", {}, "Password", el("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    el("button", { type: "submit" }, "Continue"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const data = new FormData(form);
    try {
      const started = await api("POST", "/v1/sessions", {
        ledger_id: data.get("ledger").trim(),
        username: data.get("username").trim(),
        password: data.get("password"),
      });
      session.token = started.session_token;
      session.ledger = data.get("ledger").trim();
      localStorage.setItem("folio.ledger", session.ledger);
      say("");
      if (started.next === "enrol") enrolView();
      else secondFactorView();
    } catch (error) {
      say(error.message, true);
    }
  });
  show(form);
}

function secondFactorView() {
  const form = el(
    "form",
    { id: "second-factor", class: "card" },
    el("h2", {}, "Second factor"),
    el("p", {}, "Enter the code from your authenticator app, or one of your recovery codes."),
    el("label", {}, "Code", el("input", { name: "code", autocomplete: "one-time-code", required: true })),
    el("button", { type: "submit" }, "Verify"),
  );
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const code = new FormData(form).get("code").trim();
    const body = code.includes("-") ? { recovery_code: code } : { totp_code: code };
    try {
      await api("POST", "/v1/sessions/current/verification", body);
      await signedIn();
    } catch (error) {
      say(error.message, true);
    }
  });
  show(form);
}

async function enrolView() {
  try {
    const started = await api("POST", "/v1/operators/me/totp", {});
    const codes = await api("POST", "/v1/operators/me/recovery-codes");
    const qr = el("img", {
      alt: "QR code for your authenticator app",
      src: `data:image/svg+xml;base64,${btoa(started.qr_svg)}`,
      width: 200,
    });
    const form = el(
      "form",
      { id: "enrol", class: "card" },
      el("h2", {}, "Set up your second factor"),
      el("p", {}, "Scan the code with an authenticator app, or type the secret into it."),
      qr,
      el("p", {}, "Secret: ", el("code", { id: "enrol-secret" }, started.secret_base32)),
      el("p", {}, "Recovery codes. Store them offline now; each works once and they are not shown again:"),
      el("pre", { class: "codes", id: "recovery-codes" }, codes),
      el("label", {}, "Code from the app", el("input", { name: "totp", required: true })),
      el("label", {}, "One of the recovery codes above", el("input", { name: "recovery", required: true })),
      el("button", { type: "submit" }, "Activate"),
    );
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      const data = new FormData(form);
      try {
        await api("POST", "/v1/operators/me/totp/activation", {
          totp_code: data.get("totp").trim(),
          recovery_code: data.get("recovery").trim(),
        });
        await signedIn();
      } catch (error) {
        say(error.message, true);
      }
    });
    show(form);
  } catch (error) {
    say(error.message, true);
  }
}

async function signedIn() {
  session.me = await api("GET", "/v1/sessions/current");
  document.getElementById("nav").hidden = false;
  document.getElementById("who").textContent = `${session.me.username} · ledger ${session.ledger}`;
  say("");
  if (location.hash === "#/status") await route();
  else location.hash = "#/status";
}

async function signOut() {
  try {
    await api("POST", "/v1/sessions/current/revocation", {});
  } catch (error) {
    // The session may have expired already; signing out locally is still right.
  }
  session.token = null;
  session.me = null;
  location.hash = "";
  signInView();
}

// ---- Views ---------------------------------------------------------------------------

async function statusView() {
  const ledger = await api("GET", ledgerPath(""));
  const checkpoints = await api("GET", ledgerPath("/checkpoints"));
  const last = checkpoints.items[checkpoints.items.length - 1];
  const verification = ledger.verification || {};
  const verified = verification.failure
    ? el("span", { class: "bad" }, `FAILED: ${verification.failure.code}: ${verification.failure.message}`)
    : verification.verified_position === null || verification.verified_position === undefined
      ? el("span", {}, "not verified yet")
      : el("span", { class: "ok" }, `verified to position ${verification.verified_position}`);
  const projection = ledger.projection || {};
  return [
    el("h2", {}, "Chain status"),
    el(
      "div",
      { class: "card", id: "chain-status" },
      el("p", {}, "Tenant: ", ledger.tenant),
      el("p", {}, "Head: position ", String(ledger.head_position), ", hash ", el("code", {}, ledger.head_hash)),
      el("p", {}, "Continuous verification: ", verified),
      el("p", {}, "Read models: position ", String(projection.position ?? "none"), ", lag ", String(projection.lag ?? "unknown")),
      last
        ? el("p", { id: "last-checkpoint" }, `Last signed checkpoint: ${last.tree_size} events, Merkle root `, el("code", {}, last.merkle_root))
        : el("p", { id: "last-checkpoint" }, "No checkpoint yet."),
    ),
  ];
}

async function auditView() {
  const params = new URLSearchParams(location.hash.split("?")[1] || "");
  const form = el(
    "form",
    { class: "inline", id: "audit-filter" },
    ["actor", "event_type", "stream", "from", "to"].map((name) =>
      el("label", {}, name.replace("_", " "), el("input", { name, value: params.get(name) || "" })),
    ),
    el("button", { type: "submit" }, "Search"),
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const query = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value.trim()) query.set(name, value.trim());
    location.hash = `#/audit?${query}`;
  });
  const body = el("tbody");
  const more = el("button", { type: "button", id: "audit-more", hidden: true }, "Load more");
  const load = async (after) => {
    const query = new URLSearchParams(params);
    query.set("limit", "50");
    if (after !== undefined) query.set("after_position", String(after));
    const page = await api("GET", ledgerPath(`/audit?${query}`));
    for (const entry of page.items) {
      body.append(
        el(
          "tr",
          {},
          el("td", { class: "num" }, String(entry.position)),
          el("td", {}, entry.recorded_at),
          el("td", {}, entry.event_type),
          el("td", {}, entry.stream_id),
          el("td", {}, `${entry.actor_kind}:${entry.actor_id}`),
          el("td", {}, entry.summary || ""),
        ),
      );
    }
    more.hidden = page.next_cursor === null || page.next_cursor === undefined;
    more.onclick = () => load(page.next_cursor).catch((error) => say(error.message, true));
  };
  await load();
  const headers = ["Position", "Recorded", "Event", "Stream", "Actor", "Summary"];
  return [
    el("h2", {}, "Audit trail"),
    form,
    el("table", { id: "audit-table" }, el("thead", {}, el("tr", {}, headers.map((h) => el("th", {}, h)))), body),
    more,
  ];
}

function describeChange(change) {
  const account = change.account
    ? change.account.iban || `${change.account.bsb} ${change.account.account}`
    : "";
  if (change.kind === "remove") return `remove payee ${change.payee_id} (${change.reason})`;
  return `${change.kind} payee ${change.name} ${account}`;
}

async function proposalsView() {
  const book = await api("GET", ledgerPath("/proposals"));
  const rows = book.proposals.map((proposal) => {
    const reason = el("input", { placeholder: "reason", "aria-label": "reason" });
    const mine = session.me && proposal.proposer === session.me.operator_id;
    const actions = proposal.status !== "pending"
      ? ""
      : el(
        "span",
        {},
        mine
          ? ""
          : el("button", {
            type: "button",
            class: "approve",
            onclick: () =>
              act("Approving the proposal", () =>
                api("POST", ledgerPath(`/proposals/${proposal.proposal_id}/approval`), {
                  content_hash: proposal.content_hash,
                }),
              ),
          }, "Approve"),
        reason,
        el("button", {
          type: "button",
          class: "reject",
          onclick: () =>
            act(mine ? "Withdrawing the proposal" : "Rejecting the proposal", () =>
              api("POST", ledgerPath(`/proposals/${proposal.proposal_id}/rejection`), {
                reason: reason.value.trim(),
              }),
            ),
        }, mine ? "Withdraw" : "Reject"),
      );
    return el(
      "tr",
      { "data-proposal": proposal.proposal_id },
      el("td", {}, describeChange(proposal.change)),
      el("td", {}, String(proposal.revision)),
      el("td", {}, proposal.status),
      el("td", { class: "mono" }, proposal.proposer),
      el("td", {}, time(proposal.expires_at_micros)),
      el("td", {}, actions),
    );
  });
  return [
    el("h2", {}, "Allow-list proposals"),
    el("p", {}, "A proposal needs a second operator's approval; nobody approves their own."),
    table(["Change", "Revision", "Status", "Proposer", "Expires", "Actions"], rows),
  ];
}

async function dlqView() {
  const page = await api("GET", ledgerPath("/dlq?limit=200"));
  const book = await api("GET", ledgerPath("/dlq-decisions"));
  const detail = el("div", { id: "dlq-detail" });
  const rows = page.items.map((item) =>
    el(
      "tr",
      { "data-payment": item.payment_id },
      el("td", {}, el("input", { type: "checkbox", class: "pick", value: item.payment_id, "aria-label": "select" })),
      el("td", { class: "mono" }, item.payment_id),
      el("td", { class: "num" }, money(item.amount_minor, item.currency)),
      el("td", { class: "num" }, String(item.attempts)),
      el("td", {}, `${item.last_error_kind}: ${item.last_error}`),
      el("td", {}, item.status),
      el("td", {}, item.parked_at),
      el("td", {}, el("button", {
        type: "button",
        class: "view",
        onclick: () => showDeadLetter(item.payment_id, detail).catch((error) => say(error.message, true)),
      }, "View")),
    ),
  );
  const picked = () => [...main.querySelectorAll("input.pick:checked")].map((box) => box.value);
  const reason = el("input", { name: "reason", placeholder: "reason (required)", size: 40 });
  const code = el(
    "select",
    { name: "reason_code" },
    ["duplicate", "beneficiary_closed", "cancelled_by_client", "paid_outside_folio", "other"].map((value) =>
      el("option", { value }, value.replaceAll("_", " ")),
    ),
  );
  const propose = el(
    "form",
    { class: "inline", id: "dlq-propose" },
    el("label", {}, "Reason", reason),
    el("button", {
      type: "button",
      id: "dlq-retry",
      onclick: () => act("Proposing a retry", () =>
        api("POST", ledgerPath("/dlq/retries"), { payment_ids: picked(), reason: reason.value.trim() })),
    }, "Propose retry"),
    el("label", {}, "Ignore reason", code),
    el("button", {
      type: "button",
      id: "dlq-ignore",
      onclick: () => act("Proposing to ignore", () =>
        api("POST", ledgerPath("/dlq/ignores"), {
          payment_ids: picked(),
          reason_code: code.value,
          reason: reason.value.trim(),
        })),
    }, "Propose ignore"),
  );
  return [
    el("h2", {}, "Dead-letter queue"),
    el("p", {}, "A retry reuses the payment's bank idempotency key, so it cannot pay twice. "
      + "Every decision needs a second operator's approval."),
    table(["", "Payment", "Amount", "Attempts", "Last error", "Status", "Parked at", ""], rows),
    propose,
    detail,
    el("h2", {}, "Decisions"),
    table(
      ["Action", "Payments", "Reason", "Proposer", "Status", "Expires", "Actions"],
      book.decisions.map(decisionRow),
    ),
  ];
}

/** Shows one parked payment in full; the server records who viewed it. */
async function showDeadLetter(paymentId, target) {
  const item = await api("GET", ledgerPath(`/dlq/${paymentId}`));
  const history = item.history.map((step) =>
    el("li", {}, `${step.at} (position ${step.position}): ${step.status}, ${step.detail} (by ${step.actor_id})`),
  );
  const payment = item.payment || {};
  target.replaceChildren(
    el("h3", {}, `Payment ${paymentId}`),
    el("p", {}, `${money(item.amount_minor, item.currency)} to payee ${item.payee_id}, reference ${payment.reference || ""}`),
    el("p", { id: "dlq-view-recorded" }, `Your view of this payment is recorded in the ledger at position ${item.view_position}.`),
    el("ol", {}, history),
  );
}

function decisionRow(decision) {
  const mine = session.me && decision.proposer === session.me.operator_id;
  const path = (verb) => ledgerPath(`/dlq-decisions/${decision.decision_id}/${verb}`);
  const reason = el("input", { placeholder: "reason", "aria-label": "reason" });
  const buttons = [];
  if (decision.status === "pending") {
    if (!mine) {
      buttons.push(el("button", {
        type: "button",
        class: "approve",
        onclick: () => act("Approving the decision", () =>
          api("POST", path("approval"), { content_hash: decision.content_hash })),
      }, "Approve"));
    }
    buttons.push(reason, el("button", {
      type: "button",
      class: "reject",
      onclick: () => act("Rejecting the decision", () =>
        api("POST", path("rejection"), { reason: reason.value.trim() })),
    }, mine ? "Withdraw" : "Reject"));
  } else if (decision.status === "approved" && decision.action === "retry") {
    buttons.push(decision.paused
      ? el("button", {
        type: "button",
        class: "resume",
        onclick: () => act("Resuming the release", () => api("POST", path("resume"), {})),
      }, "Resume release")
      : el("span", {}, reason, el("button", {
        type: "button",
        class: "pause",
        onclick: () => act("Pausing the release", () =>
          api("POST", path("pause"), { reason: reason.value.trim() })),
      }, "Pause release")));
  }
  const action = decision.reason_code ? `${decision.action} (${decision.reason_code})` : decision.action;
  return el(
    "tr",
    { "data-decision": decision.decision_id },
    el("td", {}, action),
    el("td", { class: "num" }, String(decision.count)),
    el("td", {}, decision.reason),
    el("td", { class: "mono" }, decision.proposer),
    el("td", {}, decision.paused ? `${decision.status}, paused` : decision.status),
    el("td", {}, time(decision.expires_at_micros)),
    el("td", {}, buttons),
  );
}

async function controlsView() {
  let latest = null;
  try {
    latest = await api("GET", ledgerPath("/controls/runs/latest"));
  } catch (error) {
    if (error.status !== 404) throw error;
  }
  const results = latest ? latest.results : [];
  const rows = results.map((result) =>
    el(
      "tr",
      {},
      el("td", {}, result.control),
      el("td", { class: { fail: "bad", pass: "ok" }[result.status] || "" }, result.status),
      el("td", { class: "num" }, String(result.examined)),
      el("td", {}, result.detail),
    ),
  );
  return [
    el("h2", {}, "Continuous controls"),
    el("p", { id: "controls-verdict" }, latest
      ? `Latest run at ${time(latest.recorded_at_micros)}, up to position ${latest.last_position}: ${latest.passed ? "all controls pass" : "CONTROLS FAIL"}.`
      : "No control run recorded yet."),
    table(["Control", "Result", "Examined", "Detail"], rows),
  ];
}

async function anomaliesView() {
  const page = await api("GET", ledgerPath("/anomalies?status=pending&limit=200"));
  const cards = page.items.map((item) => {
    const reason = el("input", { name: "reason", placeholder: "reason (required)", size: 40 });
    const decide = (verb, description) => () =>
      act(description, () =>
        api("POST", ledgerPath(`/anomalies/${item.payment_id}/${verb}`), { reason: reason.value.trim() }));
    return el(
      "div",
      { class: "card anomaly", "data-payment": item.payment_id },
      el("h3", {}, `${money(item.amount_minor, item.currency)} to payee ${item.payee_id}`),
      el("p", {}, `Payment ${item.payment_id}, held at ${item.flagged_at} (position ${item.flag_position}).`),
      el("ul", {}, item.findings.map((finding) =>
        el("li", { class: "explanation" }, el("strong", {}, finding.rule), `: ${finding.explanation}`))),
      el(
        "form",
        { class: "inline" },
        el("label", {}, "Reason", reason),
        el("button", { type: "button", class: "release", onclick: decide("release", "Releasing the payment") }, "Release to the bank"),
        el("button", { type: "button", class: "reject", onclick: decide("rejection", "Rejecting the payment") }, "Reject"),
      ),
    );
  });
  return [
    el("h2", {}, "Anomaly review"),
    el("p", {}, "Held payments wait here until a reviewer decides. The explanations are the ones "
      + "recorded with the flag, and your decision is recorded with a link to them."),
    cards.length ? cards : el("p", {}, "No payment is waiting for review."),
  ];
}

function durations(stats) {
  if (!stats || !stats.count) return "none yet";
  return `${stats.count}, median ${stats.median_seconds} s, longest ${stats.max_seconds} s`;
}

async function analyticsView() {
  const report = await api("GET", ledgerPath("/analytics"));
  const operators = report.operators.map((entry) =>
    el(
      "tr",
      {},
      el("td", {}, entry.username || entry.operator_id),
      el("td", { class: "num" }, String(entry.actions)),
      el("td", {}, Object.entries(entry.by_event_type).map(([type, count]) => `${type} ${count}`).join(", ")),
    ),
  );
  const dlq = report.dead_letters;
  const approvals = report.approvals;
  const anomalies = report.anomalies;
  return [
    el("h2", {}, "Operator analytics"),
    el("p", {}, `Computed from the ledger up to position ${report.as_of_position ?? "none"}.`),
    el(
      "div",
      { class: "card", id: "analytics-summary" },
      el("p", {}, `Dead letters: ${dlq.parked} parked, ${dlq.resolved} resolved, ${dlq.open} open; `
        + `time to resolution: ${durations(dlq.time_to_resolution)}.`),
      el("p", {}, `Allow-list approvals: ${approvals.proposed} proposed, ${approvals.approved} approved, `
        + `${approvals.rejected} rejected, ${approvals.expired} expired; turnaround: ${durations(approvals.turnaround)}.`),
      el("p", {}, `Anomalies: ${anomalies.flagged} flagged, ${anomalies.released} released, `
        + `${anomalies.rejected} rejected, ${anomalies.pending} pending; time to decision: ${durations(anomalies.time_to_decision)}.`),
    ),
    el("h3", {}, "Actions per operator"),
    table(["Operator", "Actions", "By event type"], operators),
  ];
}

const views = {
  status: statusView,
  audit: auditView,
  proposals: proposalsView,
  dlq: dlqView,
  controls: controlsView,
  anomalies: anomaliesView,
  analytics: analyticsView,
};

async function route() {
  if (!session.me) {
    signInView();
    return;
  }
  const name = (location.hash.replace(/^#\//, "").split("?")[0]) || "status";
  const view = views[name] || statusView;
  for (const link of document.querySelectorAll("nav a")) {
    link.classList.toggle("active", link.dataset.view === name);
  }
  try {
    const nodes = await view();
    show(el("section", { id: `view-${name}` }, nodes));
  } catch (error) {
    show(el("section", { id: `view-${name}` }, el("p", { class: "error" }, error.message)));
  }
}

window.addEventListener("hashchange", () => {
  say("");
  route();
});
document.getElementById("sign-out").addEventListener("click", signOut);
route();
