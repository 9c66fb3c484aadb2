// intent-router admin console: a small page over the JSON API (/v1), logged in with a session
// cookie; every change carries the session's X-CSRF-Token. No framework, no CDN.
"use strict";

const T = {
  en: {
    "tab.overview": "Overview", "tab.try": "Try a ticket", "tab.rules": "Rules", "tab.decisions": "Decisions", "tab.models": "Models",
    "logout": "Log out", "refresh": "Refresh",
    "login.title": "Log in", "login.help": "Paste an API token with the admin scope. It is exchanged for a session cookie and not stored in the page.",
    "login.token": "admin token", "login.submit": "Log in",
    "overview.days": "Days", "overview.by_intent": "Tickets per day by intent", "overview.by_team": "Tickets per day by team",
    "overview.unknown": "Share of unknown", "overview.confidence": "Confidence", "overview.total": "tickets in the period",
    "try.subject": "Subject", "try.body": "Body", "try.channel": "Channel", "try.tier": "Customer tier", "try.submit": "Decide",
    "try.chain": "Intent chain", "try.decision": "Decision", "try.trace": "Rule trace", "try.language": "Language",
    "rules.validate": "Validate", "rules.save": "Save", "rules.last": "Simulate on the last", "rules.simulate": "Simulate",
    "rules.reload": "Load saved", "rules.history": "History", "rules.valid": "Valid: {n} rules.", "rules.invalid": "{n} error(s): nothing was saved.",
    "rules.saved": "Saved as version {v}; it serves now.", "rules.conflict": "Someone saved version {v} after you opened version {mine}. Your text is still here: press “Load saved” to see theirs (copy yours first), then apply your change again.",
    "rules.rollback": "Roll back to this version", "rules.rolledback": "Rolled back: version {v} serves now.", "rules.version": "version {v}",
    "rules.warnings": "Warnings", "rules.active": "active",
    "sim.summary": "{changed} of {n} tickets would change ({missing} without text, {facts} without customer facts).", "sim.team": "Team", "sim.before": "before", "sim.after": "after",
    "sim.priority": "Priority", "sim.ticket": "Ticket", "sim.changed": "Changed",
    "dec.intent": "Intent", "dec.team": "Team", "dec.language": "Language", "dec.min": "Confidence ≥", "dec.max": "≤", "dec.since": "Since",
    "dec.apply": "Filter", "dec.time": "Time", "dec.ticket": "Ticket", "dec.confidence": "Confidence", "dec.status": "Status",
    "dec.priority": "Priority", "dec.correct": "Correct", "dec.agent": "Your name", "dec.send": "Send", "dec.sent": "Thanks: stored.",
    "dec.none": "No decisions match.",
    "models.rollback": "Roll back to the previous model", "models.id": "Version", "models.status": "Status", "models.shadow": "Shadow",
    "models.created": "Created", "models.f1": "Dev macro-F1", "models.note": "Note", "models.activate": "Activate", "models.report": "Report",
    "models.shadow_on": "Shadow on", "models.shadow_off": "Shadow off", "models.shadow_report": "Shadow report",
    "models.per_intent": "Per intent", "models.confusion": "Confusion (rows: truth, columns: predicted)", "models.calibration": "Calibration",
    "models.retrain": "Retrain now", "jobs.title": "Retraining jobs", "jobs.none": "No retraining yet.", "jobs.started": "Started", "jobs.by": "By",
    "jobs.status": "Status", "jobs.progress": "Progress", "jobs.outcome": "Outcome", "jobs.cancel": "Cancel",
    "models.done": "Done.", "models.agreement": "Agreement with the active model: {a} on {n} tickets; on {c} corrected tickets the active model was right {ar}, the shadow {sr}.",
    "tab.connectors": "Connectors", "conn.none": "No connectors configured: add [[connectors]] to the config file.",
    "nats.line": "NATS queue ({stream} / {consumer}, tickets on {subject}): {state} since {since}; routed {routed}, replayed {replayed}, retried {retried}, dead-lettered {dead} on this replica.",
    "nats.connecting": "connecting", "nats.consuming": "consuming", "nats.stopped": "stopped",
    "conn.name": "Connector", "conn.kind": "Kind", "conn.url": "Webhook URL", "conn.pending": "Events waiting", "conn.failed": "Events failed",
    "conn.out_pending": "Write-backs waiting", "conn.dead": "Dead letters", "conn.delivered": "Delivered", "conn.last": "Last event",
    "conn.show": "Show", "conn.events": "Last events of {name}", "conn.writebacks": "Write-backs of {name}", "conn.time": "Time",
    "conn.type": "Event", "conn.ticket": "Ticket", "conn.state": "State", "conn.attempts": "Attempts", "conn.note": "Result",
    "conn.retry": "Retry", "conn.retried": "Queued again.", "conn.nothing": "Nothing yet.",
    "tab.incidents": "Incidents", "inc.status": "Status", "inc.all": "all", "inc.none": "No incidents: the detector has seen nothing unusual.",
    "inc.intent": "Intent", "inc.language": "Language", "inc.opened": "Opened", "inc.last": "Last ticket", "inc.tickets": "Tickets",
    "inc.detected": "{count} tickets in {window} min where {expected} were expected (p = {p})", "inc.chart": "{intent}: tickets per {step} min against the usual share ({share}) of the volume",
    "inc.legend": "bars: the intent's tickets (dark: the incident's); line: expected; red: detection",
    "inc.words": "Top words", "inc.representative": "Representative tickets", "inc.links": "Linked tickets", "inc.how": "How", "inc.why": "Why",
    "inc.acknowledge": "Acknowledge", "inc.resolve": "Resolve", "inc.dismiss": "Dismiss", "inc.reopen": "Reopen", "inc.unlink": "Unlink",
    "inc.changed": "Now {status}.", "inc.unlinked": "Unlinked.", "inc.merged": "Merged into {id}.",
    "tab.learning": "Learning", "learn.review": "Review queue: tickets most worth a label", "learn.review_none": "Nothing to review.",
    "learn.reason": "Why", "learn.label": "Label", "learn.report": "Corrections", "learn.counts": "{n} corrections, {i} with the right intent, {l} of them training labels (text still kept).",
    "learn.rule": "Rule", "learn.corrected": "Corrected", "learn.teams": "Right teams", "learn.suggestion": "Suggestion", "learn.no_rules": "No team or assignee corrections.",
    "learn.confusions": "Intent confusions", "learn.predicted": "Model said", "learn.right": "Agent said", "learn.count": "Times", "learn.no_confusions": "No intent corrections.",
    "learn.add": "Add an intent", "learn.id": "Id (parent.child)", "learn.en": "English description", "learn.ru": "Russian description", "learn.add_submit": "Add",
    "learn.thresholds": "Chain thresholds of the serving model {model} (version {v})", "learn.depth": "Depth {d}", "learn.node": "Intent", "learn.trained": "As trained",
    "learn.effective": "Threshold", "learn.edited": "edited", "learn.save": "Save thresholds", "learn.reset": "Back to as trained",
    "learn.invalid": "{what}: a threshold is a number from 0 to 1; nothing was saved.",
    "learn.saved": "Saved as version {v}; it serves now.", "learn.conflict": "Someone saved version {v} after you opened these thresholds: they are reloaded, apply your change again.",
    "jobs.gate_passed": "gate passed", "jobs.gate_refused": "gate refused: {reasons}", "jobs.gate_f1": "dev macro-F1 {a} → {c}",
  },
  ru: {
    "tab.overview": "Обзор", "tab.try": "Проверить тикет", "tab.rules": "Правила", "tab.decisions": "Решения", "tab.models": "Модели",
    "logout": "Выйти", "refresh": "Обновить",
    "login.title": "Вход", "login.help": "Вставьте API-токен с правами admin. Он обменивается на cookie сессии и не хранится на странице.",
    "login.token": "токен администратора", "login.submit": "Войти",
    "overview.days": "Дней", "overview.by_intent": "Тикеты по дням и намерениям", "overview.by_team": "Тикеты по дням и командам",
    "overview.unknown": "Доля unknown", "overview.confidence": "Уверенность", "overview.total": "тикетов за период",
    "try.subject": "Тема", "try.body": "Текст", "try.channel": "Канал", "try.tier": "Уровень клиента", "try.submit": "Решить",
    "try.chain": "Цепочка намерений", "try.decision": "Решение", "try.trace": "Трасса правил", "try.language": "Язык",
    "rules.validate": "Проверить", "rules.save": "Сохранить", "rules.last": "Симуляция на последних", "rules.simulate": "Симулировать",
    "rules.reload": "Загрузить сохранённые", "rules.history": "История", "rules.valid": "Без ошибок: правил {n}.", "rules.invalid": "Ошибок: {n}. Ничего не сохранено.",
    "rules.saved": "Сохранено как версия {v}; она уже работает.", "rules.conflict": "Кто-то сохранил версию {v} после того, как вы открыли версию {mine}. Ваш текст остался здесь: нажмите «Загрузить сохранённые», чтобы увидеть их версию (сначала скопируйте свою), и повторите изменение.",
    "rules.rollback": "Откатить к этой версии", "rules.rolledback": "Откат выполнен: работает версия {v}.", "rules.version": "версия {v}",
    "rules.warnings": "Предупреждения", "rules.active": "активна",
    "sim.summary": "Изменится {changed} из {n} тикетов (без текста: {missing}, без данных клиента: {facts}).", "sim.team": "Команда", "sim.before": "до", "sim.after": "после",
    "sim.priority": "Приоритет", "sim.ticket": "Тикет", "sim.changed": "Изменения",
    "dec.intent": "Намерение", "dec.team": "Команда", "dec.language": "Язык", "dec.min": "Уверенность ≥", "dec.max": "≤", "dec.since": "С даты",
    "dec.apply": "Фильтр", "dec.time": "Время", "dec.ticket": "Тикет", "dec.confidence": "Уверенность", "dec.status": "Статус",
    "dec.priority": "Приоритет", "dec.correct": "Исправить", "dec.agent": "Ваше имя", "dec.send": "Отправить", "dec.sent": "Спасибо: сохранено.",
    "dec.none": "Нет подходящих решений.",
    "models.rollback": "Откатить к предыдущей модели", "models.id": "Версия", "models.status": "Статус", "models.shadow": "Тень",
    "models.created": "Создана", "models.f1": "Macro-F1 (dev)", "models.note": "Заметка", "models.activate": "Активировать", "models.report": "Отчёт",
    "models.shadow_on": "Включить тень", "models.shadow_off": "Выключить тень", "models.shadow_report": "Отчёт тени",
    "models.per_intent": "По намерениям", "models.confusion": "Матрица ошибок (строки: истина, столбцы: прогноз)", "models.calibration": "Калибровка",
    "models.retrain": "Переобучить сейчас", "jobs.title": "Задания переобучения", "jobs.none": "Переобучений ещё не было.", "jobs.started": "Начато", "jobs.by": "Кто",
    "jobs.status": "Статус", "jobs.progress": "Ход", "jobs.outcome": "Итог", "jobs.cancel": "Отменить",
    "models.done": "Готово.", "models.agreement": "Совпадение с активной моделью: {a} на {n} тикетах; на {c} исправленных тикетах активная модель права в {ar}, теневая в {sr}.",
    "tab.connectors": "Коннекторы", "conn.none": "Коннекторы не настроены: добавьте [[connectors]] в файл конфигурации.",
    "nats.line": "Очередь NATS ({stream} / {consumer}, заявки в {subject}): {state} с {since}; на этой реплике обработано {routed}, повторов {replayed}, отложено {retried}, в недоставленные {dead}.",
    "nats.connecting": "подключение", "nats.consuming": "работает", "nats.stopped": "остановлена",
    "conn.name": "Коннектор", "conn.kind": "Тип", "conn.url": "URL вебхука", "conn.pending": "Событий в очереди", "conn.failed": "Событий с ошибкой",
    "conn.out_pending": "Записей в очереди", "conn.dead": "Недоставленные", "conn.delivered": "Доставлено", "conn.last": "Последнее событие",
    "conn.show": "Показать", "conn.events": "Последние события {name}", "conn.writebacks": "Записи в {name}", "conn.time": "Время",
    "conn.type": "Событие", "conn.ticket": "Тикет", "conn.state": "Состояние", "conn.attempts": "Попыток", "conn.note": "Итог",
    "conn.retry": "Повторить", "conn.retried": "Снова в очереди.", "conn.nothing": "Пока ничего.",
    "tab.incidents": "Инциденты", "inc.status": "Статус", "inc.all": "все", "inc.none": "Инцидентов нет: детектор не заметил ничего необычного.",
    "inc.intent": "Намерение", "inc.language": "Язык", "inc.opened": "Открыт", "inc.last": "Последний тикет", "inc.tickets": "Тикетов",
    "inc.detected": "{count} тикетов за {window} мин при ожидаемых {expected} (p = {p})", "inc.chart": "{intent}: тикеты за {step} мин против обычной доли ({share}) потока",
    "inc.legend": "столбцы: тикеты намерения (тёмные: инцидента); линия: ожидаемое; красная: обнаружение",
    "inc.words": "Частые слова", "inc.representative": "Типичные тикеты", "inc.links": "Связанные тикеты", "inc.how": "Как", "inc.why": "Почему",
    "inc.acknowledge": "Взять в работу", "inc.resolve": "Решён", "inc.dismiss": "Ложная тревога", "inc.reopen": "Открыть снова", "inc.unlink": "Отвязать",
    "inc.changed": "Теперь {status}.", "inc.unlinked": "Отвязан.", "inc.merged": "Объединён с {id}.",
    "tab.learning": "Обучение", "learn.review": "Очередь разметки: тикеты, которым метка нужнее всего", "learn.review_none": "Размечать нечего.",
    "learn.reason": "Почему", "learn.label": "Метка", "learn.report": "Исправления", "learn.counts": "{n} исправлений, {i} с верным намерением, из них {l} — обучающие метки (текст ещё хранится).",
    "learn.rule": "Правило", "learn.corrected": "Исправлено", "learn.teams": "Верные команды", "learn.suggestion": "Предложение", "learn.no_rules": "Исправлений команды или исполнителя нет.",
    "learn.confusions": "Путаница намерений", "learn.predicted": "Модель", "learn.right": "Агент", "learn.count": "Раз", "learn.no_confusions": "Исправлений намерения нет.",
    "learn.add": "Добавить намерение", "learn.id": "Id (родитель.потомок)", "learn.en": "Описание по-английски", "learn.ru": "Описание по-русски", "learn.add_submit": "Добавить",
    "learn.thresholds": "Пороги цепочки у модели {model} (версия {v})", "learn.depth": "Глубина {d}", "learn.node": "Намерение", "learn.trained": "После обучения",
    "learn.effective": "Порог", "learn.edited": "изменён", "learn.save": "Сохранить пороги", "learn.reset": "Вернуть как после обучения",
    "learn.invalid": "{what}: порог — число от 0 до 1; ничего не сохранено.",
    "learn.saved": "Сохранено как версия {v}; уже действует.", "learn.conflict": "Кто-то сохранил версию {v}, пока вы редактировали: пороги перезагружены, повторите изменение.",
    "jobs.gate_passed": "проверка пройдена", "jobs.gate_refused": "проверка не пройдена: {reasons}", "jobs.gate_f1": "macro-F1 на dev {a} → {c}",
  },
};

let lang = localStorage.getItem("ir-lang") || (navigator.language.startsWith("ru") ? "ru" : "en");
let csrf = "";
let rulesVersion = null;
let leaves = [];

const $ = (sel) => document.querySelector(sel);
const esc = (s) => String(s ?? "").replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
const t = (key, vars = {}) => (T[lang][key] || T.en[key] || key).replace(/\{(\w+)\}/g, (_, k) => vars[k] ?? "");
const pct = (x) => (x == null ? "–" : (100 * x).toFixed(1) + "%");

function translate() {
  document.documentElement.lang = lang;
  document.querySelectorAll("[data-i18n]").forEach((el) => { el.textContent = t(el.dataset.i18n); });
  document.querySelectorAll("[data-i18n-placeholder]").forEach((el) => { el.placeholder = t(el.dataset.i18nPlaceholder); });
  $("#lang").textContent = lang === "en" ? "RU" : "EN";
}

async function api(method, path, body, headers = {}) {
  const init = { method, credentials: "same-origin", headers: { ...headers } };
  if (method !== "GET") init.headers["X-CSRF-Token"] = csrf;
  if (body !== undefined) {
    init.headers["Content-Type"] = "application/json";
    init.body = JSON.stringify(body);
  }
  const resp = await fetch(path, init);
  const text = await resp.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch (_) { data = text; }
  if (resp.status === 401 && path !== "/console/login") showLogin();
  return { status: resp.status, data, headers: resp.headers };
}

const errorText = (r) => (r.data && r.data.error ? `${r.data.error.code}: ${r.data.error.message}` : `HTTP ${r.status}`);

// ---- login ----

function showLogin() {
  $("#app").hidden = true; $("#tabs").hidden = true; $("#logout").hidden = true;
  $("#login").hidden = false; $("#who").textContent = "";
}

async function showApp(name) {
  $("#login").hidden = true; $("#app").hidden = false; $("#tabs").hidden = false; $("#logout").hidden = false;
  $("#who").textContent = name;
  const i = await api("GET", "/v1/intents");
  if (i.status === 200) leaves = i.data.intents.filter((n) => n.leaf).map((n) => n.id);
  show(location.hash.slice(1) || "overview");
}

$("#login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const r = await api("POST", "/console/login", { token: $("#token").value });
  $("#token").value = "";
  if (r.status !== 200) { $("#login-error").textContent = errorText(r); return; }
  csrf = r.data.csrf;
  $("#login-error").textContent = "";
  showApp(r.data.name);
});

$("#logout").addEventListener("click", async () => { await api("POST", "/console/logout"); csrf = ""; showLogin(); });
$("#lang").addEventListener("click", () => { lang = lang === "en" ? "ru" : "en"; localStorage.setItem("ir-lang", lang); translate(); show(current); });

// ---- views ----

let current = "overview";
const loaders = {};

function show(view) {
  if (!loaders[view]) view = "overview";
  current = view;
  location.hash = view;
  document.querySelectorAll(".view").forEach((v) => v.classList.toggle("active", v.id === "view-" + view));
  document.querySelectorAll("#tabs button").forEach((b) => b.classList.toggle("active", b.dataset.view === view));
  loaders[view]();
}
document.querySelectorAll("#tabs button").forEach((b) => b.addEventListener("click", () => show(b.dataset.view)));

// ---- overview: inline SVG charts ----

const PALETTE = ["#2f5bd3", "#e07a1f", "#2e9d5b", "#c62828", "#8e24aa", "#00897b", "#6d4c41", "#f4b400", "#5c6bc0", "#9e9d24"];

function stackedBars(byDay) {
  const days = Object.keys(byDay).sort();
  const keys = [...new Set(days.flatMap((d) => Object.keys(byDay[d])))].sort();
  if (!days.length) return `<p class="muted">–</p>`;
  const W = 560, H = 200, pad = 28, bw = Math.max(4, (W - pad) / days.length - 4);
  const max = Math.max(...days.map((d) => Object.values(byDay[d]).reduce((a, b) => a + b, 0)));
  let svg = `<svg viewBox="0 0 ${W} ${H + 20}" role="img">`;
  svg += `<text x="0" y="10" font-size="10" fill="#6b7385">${max}</text>`;
  days.forEach((d, i) => {
    let y = H;
    keys.forEach((k, j) => {
      const v = byDay[d][k] || 0;
      const h = (v / max) * (H - 14);
      if (v) svg += `<rect x="${pad + i * (bw + 4)}" y="${y - h}" width="${bw}" height="${h}" fill="${PALETTE[j % PALETTE.length]}"><title>${esc(d)} ${esc(k)}: ${v}</title></rect>`;
      y -= h;
    });
    if (days.length <= 16 || i % Math.ceil(days.length / 8) === 0) svg += `<text x="${pad + i * (bw + 4)}" y="${H + 14}" font-size="9" fill="#6b7385">${esc(d.slice(5))}</text>`;
  });
  svg += "</svg>";
  return svg + legend(keys);
}

function legend(keys) {
  return `<div class="legend">${keys.map((k, j) => `<span><i data-color="${PALETTE[j % PALETTE.length]}"></i>${esc(k)}</span>`).join("")}</div>`;
}

function paintLegends(root) {
  root.querySelectorAll("i[data-color]").forEach((i) => { i.style.background = i.dataset.color; });
}

function bars(values, labels, color) {
  const W = 560, H = 160, n = values.length, bw = (W - 20) / n - 4;
  const max = Math.max(1, ...values);
  let svg = `<svg viewBox="0 0 ${W} ${H + 20}" role="img">`;
  values.forEach((v, i) => {
    const h = (v / max) * (H - 10);
    svg += `<rect x="${10 + i * (bw + 4)}" y="${H - h}" width="${bw}" height="${h}" fill="${color}"><title>${esc(labels[i])}: ${esc(v)}</title></rect>`;
    svg += `<text x="${10 + i * (bw + 4)}" y="${H + 14}" font-size="9" fill="#6b7385">${esc(labels[i])}</text>`;
  });
  return svg + "</svg>";
}

loaders.overview = async () => {
  const r = await api("GET", "/v1/stats?days=" + encodeURIComponent($("#ov-days").value || 14));
  if (r.status !== 200) { $("#ov-total").textContent = errorText(r); return; }
  const s = r.data;
  $("#ov-total").textContent = `${s.tickets} ${t("overview.total")}`;
  $("#ov-intent").innerHTML = stackedBars(s.by_intent);
  $("#ov-team").innerHTML = stackedBars(s.by_team);
  $("#ov-unknown").innerHTML = bars(s.unknown.map((u) => +(100 * u.share).toFixed(1)), s.unknown.map((u) => u.day.slice(5)), "#c62828");
  $("#ov-conf").innerHTML = bars(s.confidence_histogram, s.confidence_histogram.map((_, i) => `${i / 10}–${(i + 1) / 10}`), "#2f5bd3");
  paintLegends($("#view-overview"));
};
$("#ov-refresh").addEventListener("click", () => loaders.overview());

// ---- try a ticket ----

loaders.try = async () => {};
$("#try-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const ticket = { body: $("#try-body").value };
  if ($("#try-subject").value) ticket.subject = $("#try-subject").value;
  if ($("#try-channel").value) ticket.channel = $("#try-channel").value;
  if ($("#try-tier").value) ticket.customer = { tier: $("#try-tier").value };
  const r = await api("POST", "/v1/route/dry-run", ticket);
  const out = $("#try-result");
  if (r.status !== 200) { out.innerHTML = `<p class="error">${esc(errorText(r))}</p>`; return; }
  const d = r.data;
  const chain = d.intent.chain.map((c) => `<span><b>${esc(c.intent)}</b> ${pct(c.p)}</span>`).join(" › ") || `<b>${esc(d.intent.intent)}</b>`;
  const topk = d.intent.top_k.map((c) => `${esc(c.intent)} ${pct(c.p)}`).join(", ");
  const scope = d.intent.out_of_scope == null ? "" : `; out of scope ${pct(d.intent.out_of_scope)}`;
  const also = (d.intent.intents || []).slice(1).map((s) => `; also ${esc(s.intent)} ${pct(s.p)}`).join("");
  const trace = d.trace.map((s) => `<tr class="${s.matched ? "" : "trace-miss"}"><td>${esc(s.rule)}</td><td>${s.matched ? "✔" : "✘"}</td><td>${esc(s.failed || "")}</td></tr>`).join("");
  out.innerHTML = `<div class="card" id="try-decision">
    <h3>${t("try.chain")}</h3><p class="chain">${chain}</p><p class="muted">top-k: ${topk}; margin ${d.intent.margin.toFixed(2)}${scope}${also}</p>
    <p>${t("try.language")}: <b>${esc(d.language)}</b></p>
    <h3>${t("try.decision")}</h3>
    <p id="try-team">team: <b>${esc(d.team ?? "–")}</b> · status: <b>${esc(d.status)}</b> · priority: <b>${esc(d.priority)}</b> · tags: ${esc(d.tags.join(", ") || "–")}</p>
    <p class="muted">rules v${esc(d.rules_version)} · model ${esc(d.model_version)}</p>
    <h3>${t("try.trace")}</h3><table class="table">${trace}</table></div>`;
});

// ---- rules: editor with highlighting, validation at the line, save with ETag, simulate, history ----

function highlight(text) {
  return text.split("\n").map((line) => {
    const m = line.match(/^(\s*)(\[\[?[^\]]+\]\]?)(.*)$/);
    if (m) return esc(m[1]) + `<span class="t-section">${esc(m[2])}</span>` + tokens(m[3]);
    return tokens(line);
  }).join("\n") + "\n";
}

function tokens(s) {
  let out = "", rest = s;
  const re = /("(?:[^"\\]|\\.)*"|'[^']*')|(#.*$)|\b(true|false)\b|(-?\b\d+(?:\.\d+)?\b)|([A-Za-z_][\w.-]*)(?=\s*=)/;
  while (rest.length) {
    const m = rest.match(re);
    if (!m) { out += esc(rest); break; }
    out += esc(rest.slice(0, m.index));
    const [all, str, comment, bool, num, key] = m;
    const cls = str ? "t-string" : comment ? "t-comment" : bool ? "t-bool" : num ? "t-number" : key ? "t-key" : "";
    out += `<span class="${cls}">${esc(all)}</span>`;
    rest = rest.slice(m.index + all.length);
  }
  return out;
}

let errorLines = new Set();

function renderEditor() {
  const text = $("#rules-text").value;
  $("#rules-highlight").innerHTML = highlight(text);
  const n = text.split("\n").length;
  $("#rules-gutter").innerHTML = Array.from({ length: n }, (_, i) => errorLines.has(i + 1) ? `<span class="err" data-line="${i + 1}">${i + 1}</span>` : `${i + 1}`).join("\n");
  sizeEditor();
}

function sizeEditor() {
  const ta = $("#rules-text");
  const code = ta.parentElement;
  code.style.height = Math.max(440, ta.scrollHeight) + "px";
  code.style.width = Math.max(code.parentElement.clientWidth - 60, ta.scrollWidth) + "px";
}

$("#rules-text").addEventListener("input", () => { errorLines = new Set(); renderEditor(); });
$("#rules-text").addEventListener("keydown", (e) => {
  if (e.key === "Tab") { e.preventDefault(); document.execCommand("insertText", false, "    "); }
});

function showErrors(errors) {
  errorLines = new Set(errors.filter((e) => e.line).map((e) => e.line));
  $("#rules-errors").innerHTML = errors.map((e) => `<li data-line="${esc(e.line ?? "")}">${e.line ? `line ${e.line}: ` : ""}${esc(e.message)}</li>`).join("");
  $("#rules-errors").querySelectorAll("li[data-line]").forEach((li) => li.addEventListener("click", () => goToLine(+li.dataset.line)));
  renderEditor();
}

// Selects a line in the editor and scrolls it into view.
function goToLine(n) {
  if (!n) return;
  const ta = $("#rules-text");
  const lines = ta.value.split("\n");
  const start = lines.slice(0, n - 1).reduce((a, l) => a + l.length + 1, 0);
  ta.focus();
  ta.setSelectionRange(start, start + (lines[n - 1] || "").length);
  const lineHeight = parseFloat(getComputedStyle(ta).lineHeight) || 19.5;
  $(".editor").scrollTop = Math.max(0, (n - 5) * lineHeight);
}

// Server messages read "rules:LINE: path: message".
const parseError = (m) => { const x = /^rules:(\d+): (.*)$/.exec(m); return x ? { line: +x[1], message: x[2] } : { line: null, message: m }; };

async function loadRules() {
  const r = await api("GET", "/v1/rules");
  if (r.status !== 200) { $("#rules-status").textContent = errorText(r); return; }
  rulesVersion = r.data.version;
  $("#rules-text").value = r.data.text;
  $("#rules-version").textContent = t("rules.version", { v: rulesVersion });
  $("#rules-status").textContent = r.data.warnings.length ? `${t("rules.warnings")}: ${r.data.warnings.join("; ")}` : "";
  $("#rules-status").className = r.data.warnings.length ? "warn" : "";
  showErrors([]);
  loadHistory();
}

loaders.rules = async () => { if (rulesVersion === null) await loadRules(); else { renderEditor(); loadHistory(); } };
$("#rules-reload").addEventListener("click", loadRules);

$("#rules-validate").addEventListener("click", async () => {
  const r = await api("POST", "/v1/rules/validate", { text: $("#rules-text").value });
  if (r.status !== 200) { $("#rules-status").textContent = errorText(r); return; }
  showErrors(r.data.errors);
  const st = $("#rules-status");
  if (r.data.valid) { st.textContent = t("rules.valid", { n: r.data.rules }) + (r.data.warnings.length ? ` ${t("rules.warnings")}: ${r.data.warnings.join("; ")}` : ""); st.className = "ok"; }
  else { st.textContent = t("rules.invalid", { n: r.data.errors.length }); st.className = "error"; }
});

$("#rules-save").addEventListener("click", async () => {
  const st = $("#rules-status");
  const r = await api("PUT", "/v1/rules", { text: $("#rules-text").value, note: "edited in the console" }, { "If-Match": `"${rulesVersion}"` });
  if (r.status === 200) {
    rulesVersion = r.data.version;
    $("#rules-version").textContent = t("rules.version", { v: rulesVersion });
    showErrors([]);
    st.textContent = t("rules.saved", { v: rulesVersion }); st.className = "ok";
    loadHistory();
  } else if (r.status === 412) {
    st.textContent = t("rules.conflict", { v: r.data.error.details.current_version, mine: rulesVersion }); st.className = "error";
  } else if (r.status === 422 && r.data.error.code === "invalid_rules") {
    showErrors(r.data.error.details.errors.map(parseError));
    st.textContent = t("rules.invalid", { n: r.data.error.details.errors.length }); st.className = "error";
  } else { st.textContent = errorText(r); st.className = "error"; }
});

$("#rules-simulate").addEventListener("click", async () => {
  const out = $("#sim-result");
  const r = await api("POST", "/v1/rules/simulate", { rules: $("#rules-text").value, last: +$("#sim-last").value || 200 });
  if (r.status === 422 && r.data.error.code === "invalid_rules") { showErrors(r.data.error.details.errors.map(parseError)); out.innerHTML = ""; return; }
  if (r.status !== 200) { out.innerHTML = `<p class="error">${esc(errorText(r))}</p>`; return; }
  const s = r.data.summary;
  const table = (title, m) => `<table class="table"><tr><th>${title}</th><th>${t("sim.before")}</th><th>${t("sim.after")}</th></tr>${Object.entries(m).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v.before}</td><td>${v.after}</td></tr>`).join("")}</table>`;
  const changed = r.data.results.filter((x) => x.changed.length);
  const rows = changed.slice(0, 100).map((x) => `<tr><td>${esc(x.ticket_id)}</td><td>${esc(x.intent)}</td><td>${esc(x.changed.join(", "))}</td><td>${esc(x.before.team)} → ${esc(x.after.team)}; ${esc(x.before.priority)} → ${esc(x.after.priority)}</td></tr>`).join("");
  out.innerHTML = `<div class="card" id="sim-summary"><p><b>${t("sim.summary", { changed: s.changed, n: s.tickets, missing: s.text_missing, facts: s.facts_missing })}</b></p>
    <div class="grid2">${table(t("sim.team"), s.teams)}${table(t("sim.priority"), s.priorities)}</div>
    <table class="table"><tr><th>${t("sim.ticket")}</th><th>intent</th><th>${t("sim.changed")}</th><th></th></tr>${rows}</table></div>`;
});

function diffHtml(diff) {
  return diff.split("\n").map((l) => {
    const cls = l.startsWith("@@") ? "hunk" : l.startsWith("+") && !l.startsWith("+++") ? "add" : l.startsWith("-") && !l.startsWith("---") ? "del" : "";
    return `<span class="${cls}">${esc(l)}</span>`;
  }).join("\n");
}

async function loadHistory() {
  const r = await api("GET", "/v1/rules/versions");
  if (r.status !== 200) return;
  $("#rules-history").innerHTML = r.data.versions.map((v) => `<div class="card">
      <b>v${esc(v.version)}</b> ${v.active ? `<span class="badge">${t("rules.active")}</span>` : ""} · ${esc(v.author)} · ${esc(new Date(v.created_at).toLocaleString())} · ${esc(v.note)}
      ${v.active ? "" : `<button class="small secondary" data-rollback="${esc(v.version)}">${t("rules.rollback")}</button>`}
      <details><summary>diff</summary><pre class="diff">${diffHtml(v.diff)}</pre></details></div>`).join("");
  document.querySelectorAll("[data-rollback]").forEach((b) => b.addEventListener("click", async () => {
    const r = await api("POST", "/v1/rules/rollback", { version: +b.dataset.rollback });
    const st = $("#rules-status");
    if (r.status !== 200) { st.textContent = errorText(r); st.className = "error"; return; }
    await loadRules();
    st.textContent = t("rules.rolledback", { v: r.data.version }); st.className = "ok";
  }));
}

// ---- decisions ----

loaders.decisions = async () => {
  const q = new URLSearchParams();
  const add = (k, v) => { if (v) q.set(k, v); };
  add("intent", $("#f-intent").value); add("team", $("#f-team").value); add("language", $("#f-language").value);
  add("min_confidence", $("#f-min").value); add("max_confidence", $("#f-max").value);
  if ($("#f-since").value) q.set("since", new Date($("#f-since").value).toISOString());
  q.set("limit", "100");
  const r = await api("GET", "/v1/decisions?" + q);
  const table = $("#dec-table");
  if (r.status !== 200) { table.innerHTML = `<tr><td class="error">${esc(errorText(r))}</td></tr>`; return; }
  if (!r.data.decisions.length) { table.innerHTML = `<tr><td class="muted">${t("dec.none")}</td></tr>`; return; }
  table.innerHTML = `<tr><th>${t("dec.time")}</th><th>${t("dec.ticket")}</th><th>${t("dec.intent")}</th><th>${t("dec.confidence")}</th><th>${t("dec.language")}</th><th>${t("dec.team")}</th><th>${t("dec.status")}</th><th>${t("dec.priority")}</th><th></th></tr>` +
    r.data.decisions.map((d) => `<tr data-decision="${esc(d.decision_id)}"><td>${esc(new Date(d.received_at).toLocaleString())}</td><td>${esc(d.ticket_id)}</td>
      <td>${esc(d.intent.intent)}</td><td>${pct(d.intent.top_k[0] && d.intent.top_k[0].p)}</td><td>${esc(d.language)}</td><td>${esc(d.team ?? "–")}</td>
      <td>${esc(d.status)}</td><td>${esc(d.priority)}</td><td><button class="small secondary" data-correct="${esc(d.decision_id)}">${t("dec.correct")}</button></td></tr>`).join("");
  table.querySelectorAll("[data-correct]").forEach((b) => b.addEventListener("click", () => correctForm(b)));
};
$("#dec-filter").addEventListener("submit", (e) => { e.preventDefault(); loaders.decisions(); });

function correctForm(button) {
  const cell = button.parentElement;
  const id = button.dataset.correct;
  cell.innerHTML = `<form class="row correct-form"><select name="intent">${leaves.map((l) => `<option>${esc(l)}</option>`).join("")}</select>
    <input name="agent" placeholder="${t("dec.agent")}" required><button class="small">${t("dec.send")}</button></form>`;
  cell.querySelector("form").addEventListener("submit", async (e) => {
    e.preventDefault();
    const f = e.target;
    const r = await api("POST", "/v1/feedback", { decision_id: id, correct_intent: f.intent.value, agent: f.agent.value });
    cell.innerHTML = r.status === 201 || r.status === 200 ? `<span class="ok">${t("dec.sent")}</span>` : `<span class="error">${esc(errorText(r))}</span>`;
  });
}

// ---- models ----

loaders.models = async () => {
  loadJobs();
  const r = await api("GET", "/v1/models");
  const table = $("#models-table");
  if (r.status !== 200) { table.innerHTML = `<tr><td class="error">${esc(errorText(r))}</td></tr>`; return; }
  const f1 = (m) => { const x = (m.metrics && m.metrics.dev && m.metrics.dev.candidate) ? m.metrics.dev.candidate.macro_f1 : (m.metrics && m.metrics.macro_f1); return x == null ? "–" : x.toFixed(3); };
  table.innerHTML = `<tr><th>${t("models.id")}</th><th>${t("models.status")}</th><th>${t("models.shadow")}</th><th>${t("models.created")}</th><th>${t("models.f1")}</th><th>${t("models.note")}</th><th></th></tr>` +
    r.data.models.map((m) => `<tr data-model="${esc(m.id)}"><td>${esc(m.id)}${m.id === r.data.serving ? ' <span class="badge">serving</span>' : ""}</td><td>${esc(m.status)}</td><td>${m.shadow ? "✔" : ""}</td>
      <td>${esc(new Date(m.created_at).toLocaleString())}</td><td>${f1(m)}</td><td>${esc(m.note)}</td>
      <td>${m.status !== "active" ? `<button class="small" data-activate="${esc(m.id)}">${t("models.activate")}</button>` : ""}
      ${m.status === "candidate" ? `<button class="small secondary" data-shadow="${esc(m.id)}" data-on="${m.shadow ? "0" : "1"}">${t(m.shadow ? "models.shadow_off" : "models.shadow_on")}</button>` : ""}
      <button class="small secondary" data-report="${esc(m.id)}">${t("models.report")}</button>
      ${m.shadow ? `<button class="small secondary" data-shadow-report="${esc(m.id)}">${t("models.shadow_report")}</button>` : ""}</td></tr>`).join("");
  const act = async (path, body) => {
    const r = await api("POST", path, body);
    $("#models-status").textContent = r.status === 200 ? t("models.done") : errorText(r);
    $("#models-status").className = r.status === 200 ? "ok" : "error";
    loaders.models();
  };
  table.querySelectorAll("[data-activate]").forEach((b) => b.addEventListener("click", () => act(`/v1/models/${encodeURIComponent(b.dataset.activate)}/activate`)));
  table.querySelectorAll("[data-shadow]").forEach((b) => b.addEventListener("click", () => act(`/v1/models/${encodeURIComponent(b.dataset.shadow)}/shadow`, { enabled: b.dataset.on === "1" })));
  table.querySelectorAll("[data-report]").forEach((b) => b.addEventListener("click", () => modelReport(b.dataset.report)));
  table.querySelectorAll("[data-shadow-report]").forEach((b) => b.addEventListener("click", () => shadowReport(b.dataset.shadowReport)));
};
// A retraining's gate: passed or the reasons it refused, and the dev macro-F1 of both models.
function gate(g) {
  if (!g) return "";
  const f1 = g.dev && g.dev.active && g.dev.candidate ? `; ${t("jobs.gate_f1", { a: g.dev.active.macro_f1.toFixed(3), c: g.dev.candidate.macro_f1.toFixed(3) })}` : "";
  return g.passed ? ` <span class="ok gate">(${t("jobs.gate_passed")}${f1})</span>` : ` <span class="error gate">(${esc(t("jobs.gate_refused", { reasons: g.reasons.join("; ") }))}${f1})</span>`;
}

// Retraining runs as a job: the table follows it until it ends.
let jobsTimer = null;
async function loadJobs() {
  const r = await api("GET", "/v1/jobs?limit=10");
  const table = $("#jobs-table");
  if (r.status !== 200) { table.innerHTML = `<tr><td class="error">${esc(errorText(r))}</td></tr>`; return; }
  const jobs = r.data.jobs;
  if (!jobs.length) { table.innerHTML = `<tr><td class="muted">${t("jobs.none")}</td></tr>`; return; }
  const progress = (j) => j.status !== "running" || !j.progress ? "–" : j.progress.total ? `${esc(j.progress.stage)} ${j.progress.done}/${j.progress.total}` : esc(j.progress.stage);
  const outcome = (j) => j.result ? `${esc(j.result.outcome)}: ${esc(j.result.model.id)}${gate(j.result.gate)}` : j.error ? `<span class="error">${esc(j.error.code)}: ${esc(j.error.message)}</span>` : "";
  table.innerHTML = `<tr><th>${t("jobs.started")}</th><th>${t("jobs.by")}</th><th>${t("jobs.status")}</th><th>${t("jobs.progress")}</th><th>${t("jobs.outcome")}</th><th></th></tr>` +
    jobs.map((j) => `<tr data-job="${esc(j.id)}" data-status="${esc(j.status)}"><td>${esc(new Date(j.created_at).toLocaleString())}</td><td>${esc(j.created_by)}</td>
      <td>${esc(j.status)}</td><td>${progress(j)}</td><td>${outcome(j)}</td>
      <td>${j.status === "running" && !j.cancel_requested ? `<button class="small secondary" data-cancel="${esc(j.id)}">${t("jobs.cancel")}</button>` : ""}</td></tr>`).join("");
  table.querySelectorAll("[data-cancel]").forEach((b) => b.addEventListener("click", async () => {
    const c = await api("POST", `/v1/jobs/${encodeURIComponent(b.dataset.cancel)}/cancel`);
    if (c.status !== 202) { $("#models-status").textContent = errorText(c); $("#models-status").className = "error"; }
    loadJobs();
  }));
  clearTimeout(jobsTimer);
  if (jobs.some((j) => j.status === "running") && $("#view-models").classList.contains("active")) jobsTimer = setTimeout(loadJobs, 2000);
  else if (table.dataset.wasRunning === "1") loaders.models();
  table.dataset.wasRunning = jobs.some((j) => j.status === "running") ? "1" : "0";
}
$("#models-retrain").addEventListener("click", async () => {
  const r = await api("POST", "/v1/models/retrain");
  $("#models-status").textContent = r.status === 202 ? "" : errorText(r);
  $("#models-status").className = r.status === 202 ? "ok" : "error";
  loadJobs();
});
$("#models-rollback").addEventListener("click", async () => {
  const r = await api("POST", "/v1/models/rollback");
  $("#models-status").textContent = r.status === 200 ? t("models.done") : errorText(r);
  $("#models-status").className = r.status === 200 ? "ok" : "error";
  loaders.models();
});

// ---- learning: the review queue, the corrections report, adding an intent, the thresholds ----

loaders.learning = async () => {
  const [review, report, models] = await Promise.all([api("GET", "/v1/review?limit=20"), api("GET", "/v1/feedback/report"), api("GET", "/v1/models")]);
  const rq = $("#learn-review");
  if (review.status !== 200) rq.innerHTML = `<tr><td class="error">${esc(errorText(review))}</td></tr>`;
  else if (!review.data.review.length) rq.innerHTML = `<tr><td class="muted">${t("learn.review_none")}</td></tr>`;
  else {
    rq.innerHTML = `<tr><th>${t("dec.ticket")}</th><th>${t("dec.intent")}</th><th>top 3</th><th>${t("learn.reason")}</th><th></th></tr>` +
      review.data.review.map((x) => `<tr data-review="${esc(x.decision_id)}"><td>${esc(x.ticket_id ?? "–")}</td><td>${esc(x.intent)}</td>
        <td>${x.top_k.map((s) => `${esc(s.intent)} ${pct(s.p)}`).join(", ")}</td><td>${esc(x.reason)}</td>
        <td><button class="small secondary" data-correct="${esc(x.decision_id)}">${t("learn.label")}</button></td></tr>`).join("");
    rq.querySelectorAll("[data-correct]").forEach((b) => b.addEventListener("click", () => correctForm(b)));
  }
  const rep = $("#learn-report");
  if (report.status !== 200) rep.innerHTML = `<p class="error">${esc(errorText(report))}</p>`;
  else {
    const f = report.data;
    const rules = f.rules.length ? `<table class="table" id="learn-rules"><tr><th>${t("learn.rule")}</th><th>${t("learn.corrected")}</th><th>${t("learn.teams")}</th><th>${t("learn.suggestion")}</th></tr>` +
      f.rules.map((r) => `<tr><td>${esc(r.rule)}</td><td>${r.corrected}</td><td>${Object.entries(r.right_teams).map(([k, v]) => `${esc(k)} ×${v}`).join(", ")}</td><td>${esc(r.suggestion)}</td></tr>`).join("") + "</table>"
      : `<p class="muted">${t("learn.no_rules")}</p>`;
    const conf = f.intent_confusions.length ? `<table class="table" id="learn-confusions"><tr><th>${t("learn.predicted")}</th><th>${t("learn.right")}</th><th>${t("learn.count")}</th></tr>` +
      f.intent_confusions.map((c) => `<tr><td>${esc(c.predicted)}</td><td>${esc(c.correct)}</td><td>${c.count}</td></tr>`).join("") + "</table>"
      : `<p class="muted">${t("learn.no_confusions")}</p>`;
    rep.innerHTML = `<p id="learn-counts">${esc(t("learn.counts", { n: f.feedback, i: f.intent_corrections, l: f.training_labels }))}</p>${rules}<h3>${t("learn.confusions")}</h3>${conf}`;
  }
  if (models.status === 200) loadThresholds(models.data.serving);
};

$("#learn-add").addEventListener("submit", async (e) => {
  e.preventDefault();
  const f = e.target;
  const r = await api("POST", "/v1/intents", { id: f.intent_id.value.trim(), en: f.en.value.trim(), ru: f.ru.value.trim() });
  $("#learn-status").textContent = r.status === 201 ? r.data.note : errorText(r);
  $("#learn-status").className = r.status === 201 ? "ok" : "error";
  if (r.status === 201) { leaves = leaves.concat([r.data.intent.id]); f.reset(); }
});

// The serving model's thresholds: depth values and one row per node; a node follows its depth's
// value until it is given its own (tuned by training or edited here).
let thresholdsETag = null;
async function loadThresholds(model) {
  const box = $("#learn-thresholds");
  const r = await api("GET", `/v1/models/${encodeURIComponent(model)}/thresholds`);
  if (r.status !== 200) { box.innerHTML = `<p class="error">${esc(errorText(r))}</p>`; return; }
  thresholdsETag = r.headers.get("ETag");
  const v = r.data;
  v.trained.nodes = v.trained.nodes || {}; v.overrides.nodes = v.overrides.nodes || {};
  const depths = Math.max(...v.nodes.map((n) => n.depth)) + 1;
  const depthOf = (d) => { const list = v.overrides.depth.length ? v.overrides.depth : v.trained.depth; return list.length ? list[Math.min(d, list.length - 1)] : 0.5; };
  const input = (attrs, value) => `<input type="number" min="0" max="1" step="0.01" ${attrs} value="${value}">`;
  box.dataset.model = model;
  box.innerHTML = `<h3>${esc(t("learn.thresholds", { model, v: v.version }))}</h3>
    <div class="row">${Array.from({ length: depths }, (_, d) => `<label><span>${t("learn.depth", { d })}</span>${input(`data-depth="${d}" data-trained="${v.trained.depth.length ? v.trained.depth[Math.min(d, v.trained.depth.length - 1)] : 0.5}"`, depthOf(d))}</label>`).join("")}</div>
    <table class="table" id="thr-table"><tr><th>${t("learn.node")}</th><th>${t("learn.trained")}</th><th>${t("learn.effective")}</th></tr>` +
    v.nodes.map((n) => `<tr data-node="${esc(n.intent)}" data-level="${Math.min(n.depth, 3)}"><td>${esc(n.intent)}</td><td>${n.trained.toFixed(2)}</td>
      <td>${input(`data-id="${esc(n.intent)}" data-d="${n.depth}" data-tuned="${v.trained.nodes[n.intent] ?? ""}" data-follow="${n.intent in v.trained.nodes || n.intent in v.overrides.nodes ? 0 : 1}"`, n.effective)}
      ${n.edited ? `<span class="badge">${t("learn.edited")}</span>` : ""}</td></tr>`).join("") + `</table>
    <div class="row"><button id="thr-save">${t("learn.save")}</button><button id="thr-reset" class="secondary">${t("learn.reset")}</button><span id="thr-status"></span></div>`;
  const depthValue = (d) => +box.querySelector(`[data-depth="${Math.min(d, depths - 1)}"]`).value;
  box.querySelectorAll("[data-depth]").forEach((i) => i.addEventListener("input", () => {
    const x = +i.value;
    if (i.value.trim() === "" || !(x >= 0 && x <= 1)) return;
    box.querySelectorAll('[data-id][data-follow="1"]').forEach((n) => { n.value = depthValue(+n.dataset.d); });
  }));
  box.querySelectorAll("[data-id]").forEach((i) => i.addEventListener("input", () => { i.dataset.follow = "0"; }));
  $("#thr-save").addEventListener("click", () => {
    // An empty or out-of-range field is refused here, before anything is sent.
    const bad = [...box.querySelectorAll("input")].find((i) => i.value.trim() === "" || !(+i.value >= 0 && +i.value <= 1));
    if (bad) {
      bad.focus();
      $("#thr-status").textContent = t("learn.invalid", { what: bad.dataset.id || t("learn.depth", { d: bad.dataset.depth }) });
      $("#thr-status").className = "error";
      return;
    }
    const depth = [...box.querySelectorAll("[data-depth]")].map((i) => +i.value);
    const trainedDepth = [...box.querySelectorAll("[data-depth]")].map((i) => +i.dataset.trained);
    const nodes = {};
    box.querySelectorAll("[data-id]").forEach((i) => {
      const base = i.dataset.tuned !== "" ? +i.dataset.tuned : depthValue(+i.dataset.d);
      if (Math.abs(+i.value - base) > 1e-6) nodes[i.dataset.id] = +i.value;
    });
    const sameDepth = depth.every((x, d) => Math.abs(x - trainedDepth[d]) < 1e-6);
    saveThresholds(model, { depth: sameDepth ? [] : depth, nodes });
  });
  $("#thr-reset").addEventListener("click", () => saveThresholds(model, {}));
}

async function saveThresholds(model, overrides) {
  const r = await api("PUT", `/v1/models/${encodeURIComponent(model)}/thresholds`, { overrides, note: "edited in the console" }, { "If-Match": thresholdsETag });
  // Reloaded when saved, or when someone else saved first; otherwise the edits stay to mend.
  if (r.status === 200 || r.status === 412) await loadThresholds(model);
  const st = $("#thr-status");
  if (r.status === 200) { st.textContent = t("learn.saved", { v: r.data.version }); st.className = "ok"; }
  else if (r.status === 412) { st.textContent = t("learn.conflict", { v: r.data.error.details.current_version }); st.className = "error"; }
  else { st.textContent = errorText(r); st.className = "error"; }
}

// ---- connectors: status, last events, write-backs and their dead letters ----

const when = (x) => (x ? new Date(x).toLocaleString() : "–");

loaders.connectors = async () => {
  const r = await api("GET", "/v1/connectors");
  const table = $("#conn-table");
  if (r.status !== 200) { $("#conn-nats").textContent = ""; table.innerHTML = `<tr><td class="error">${esc(errorText(r))}</td></tr>`; return; }
  const q = r.data.nats;
  $("#conn-nats").className = q && q.state !== "consuming" ? "error" : "";
  $("#conn-nats").textContent = q ? t("nats.line", { stream: q.stream, consumer: q.consumer, subject: q.subject,
    state: t(`nats.${q.state}`), since: when(q.since), routed: q.messages.routed, replayed: q.messages.replayed,
    retried: q.messages.retried, dead: q.messages.dead_lettered }) + (q.error ? ` ${q.error}` : "") : "";
  if (!r.data.connectors.length) { table.innerHTML = `<tr><td class="muted">${t("conn.none")}</td></tr>`; $("#conn-detail").innerHTML = ""; return; }
  table.innerHTML = `<tr><th>${t("conn.name")}</th><th>${t("conn.kind")}</th><th>${t("conn.url")}</th><th>${t("conn.pending")}</th><th>${t("conn.failed")}</th>
    <th>${t("conn.out_pending")}</th><th>${t("conn.dead")}</th><th>${t("conn.delivered")}</th><th>${t("conn.last")}</th><th></th></tr>` +
    r.data.connectors.map((c) => `<tr data-connector="${esc(c.name)}"><td>${esc(c.name)}</td><td>${esc(c.kind)}</td><td><code>${esc(c.events_url)}</code></td>
      <td>${c.inbox_pending}</td><td${c.inbox_failed ? ' class="error"' : ""}>${c.inbox_failed}</td><td>${c.outbox_pending}</td>
      <td${c.outbox_dead ? ' class="error"' : ""}>${c.outbox_dead}</td><td>${c.outbox_delivered}</td><td>${when(c.last_event_at)}</td>
      <td><button class="small secondary" data-show="${esc(c.name)}">${t("conn.show")}</button></td></tr>`).join("");
  table.querySelectorAll("[data-show]").forEach((b) => b.addEventListener("click", () => connectorDetail(b.dataset.show)));
  const open = $("#conn-detail").dataset.connector;
  if (open && r.data.connectors.some((c) => c.name === open)) connectorDetail(open);
};
$("#conn-refresh").addEventListener("click", () => loaders.connectors());

async function connectorDetail(name) {
  const base = `/v1/connectors/${encodeURIComponent(name)}`;
  const [events, out] = await Promise.all([api("GET", `${base}/inbox?limit=20`), api("GET", `${base}/outbox?limit=20`)]);
  const detail = $("#conn-detail");
  detail.dataset.connector = name;
  if (events.status !== 200 || out.status !== 200) { detail.innerHTML = `<p class="error">${esc(errorText(events.status !== 200 ? events : out))}</p>`; return; }
  const retry = (kind, x, failed) => (x.state === failed ? `<button class="small" data-retry="${kind}/${esc(x.id)}">${t("conn.retry")}</button>` : "");
  const rows = (list, head, row) => (list.length ? `<table class="table">${head}${list.map(row).join("")}</table>` : `<p class="muted">${t("conn.nothing")}</p>`);
  detail.innerHTML = `<h3>${esc(t("conn.events", { name }))}</h3>` +
    rows(events.data.events, `<tr><th>${t("conn.time")}</th><th>${t("conn.type")}</th><th>${t("conn.ticket")}</th><th>${t("conn.state")}</th><th>${t("conn.attempts")}</th><th>${t("conn.note")}</th><th></th></tr>`,
      (e) => `<tr data-event="${esc(e.id)}"><td>${when(e.received_at)}</td><td>${esc(e.event_type)}</td><td>${esc(e.ticket_id)}</td><td>${esc(e.state)}</td>
        <td>${e.attempts}</td><td${e.state === "failed" ? ' class="error"' : ""}>${esc(e.error ?? e.decision_id ?? "")}</td><td>${retry("inbox", e, "failed")}</td></tr>`) +
    `<h3>${esc(t("conn.writebacks", { name }))}</h3>` +
    rows(out.data.write_backs, `<tr><th>${t("conn.time")}</th><th>${t("conn.ticket")}</th><th>${t("conn.state")}</th><th>${t("conn.attempts")}</th><th>${t("conn.note")}</th><th></th></tr>`,
      (w) => `<tr data-write-back="${esc(w.id)}" data-state="${esc(w.state)}"><td>${when(w.created_at)}</td><td>${esc(w.ticket_id)}</td><td>${esc(w.state)}</td>
        <td>${w.attempts}</td><td${w.state === "dead" ? ' class="error"' : ""}>${esc(w.last_error ?? (w.last_status ? "HTTP " + w.last_status : ""))}</td><td>${retry("outbox", w, "dead")}</td></tr>`);
  detail.querySelectorAll("[data-retry]").forEach((b) => b.addEventListener("click", async () => {
    const [kind, id] = b.dataset.retry.split("/");
    const r = await api("POST", `${base}/${kind}/${encodeURIComponent(id)}/retry`);
    $("#conn-status").textContent = r.status === 202 ? t("conn.retried") : errorText(r);
    $("#conn-status").className = r.status === 202 ? "ok" : "error";
    loaders.connectors();
  }));
}

// ---- incidents: the list, one incident's chart, words, tickets and status ----

loaders.incidents = async () => {
  const status = $("#inc-filter").value;
  const r = await api("GET", "/v1/incidents?limit=100" + (status ? "&status=" + encodeURIComponent(status) : ""));
  const table = $("#inc-table");
  if (r.status !== 200) { table.innerHTML = `<tr><td class="error">${esc(errorText(r))}</td></tr>`; return; }
  if (!r.data.incidents.length) { table.innerHTML = `<tr><td class="muted">${t("inc.none")}</td></tr>`; $("#inc-detail").innerHTML = ""; return; }
  table.innerHTML = `<tr><th>${t("inc.opened")}</th><th>${t("inc.intent")}</th><th>${t("inc.language")}</th><th>${t("inc.status")}</th>
    <th>${t("inc.tickets")}</th><th>${t("inc.last")}</th><th></th></tr>` +
    r.data.incidents.map((i) => `<tr data-incident="${esc(i.id)}" data-status="${esc(i.status)}" data-opened="${esc(i.opened_at)}"><td>${when(i.opened_at)}</td><td>${esc(i.intent)}</td>
      <td>${esc(i.language || "")}</td><td>${esc(i.merged_into ? "→ " + i.merged_into.slice(0, 8) : i.status)}</td><td>${i.tickets}</td><td>${when(i.last_at)}</td>
      <td><button class="small secondary" data-show="${esc(i.id)}">${t("conn.show")}</button></td></tr>`).join("");
  table.querySelectorAll("[data-show]").forEach((b) => b.addEventListener("click", () => incidentDetail(b.dataset.show)));
  const open = $("#inc-detail").dataset.incident;
  if (open && r.data.incidents.some((i) => i.id === open)) incidentDetail(open);
};
$("#inc-refresh").addEventListener("click", () => loaders.incidents());
$("#inc-filter").addEventListener("change", () => loaders.incidents());

// Bars of the intent's tickets per hour (the incident's darker), the expected count as a line,
// the detection as a red mark.
function incidentChart(s) {
  const W = 720, H = 220, left = 30, bottom = 20, n = s.points.length, bw = (W - left) / n;
  const max = Math.max(1, ...s.points.map((p) => Math.max(p.tickets, p.expected)));
  const y = (v) => H - bottom - (v / max) * (H - bottom - 10);
  const bars = s.points.map((p, k) => {
    const x = left + k * bw;
    return `<rect x="${x + 1}" y="${y(p.tickets)}" width="${bw - 2}" height="${H - bottom - y(p.tickets)}" fill="#9fb4ec"><title>${esc(when(p.at))}: ${p.tickets} (${p.linked})</title></rect>` +
      `<rect x="${x + 1}" y="${y(p.linked)}" width="${bw - 2}" height="${H - bottom - y(p.linked)}" fill="#2f5bd3"/>`;
  }).join("");
  const line = s.points.map((p, k) => `${left + (k + 0.5) * bw},${y(p.expected)}`).join(" ");
  const from = new Date(s.points[0].at).getTime();
  const dx = left + ((new Date(s.detected_at).getTime() - from) / (60000 * s.step_minutes)) * bw;
  const ticks = s.points.map((p, k) => (k % 6 === 0 ? `<text x="${left + k * bw}" y="${H - 5}" class="axis">${new Date(p.at).toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" })}</text>` : "")).join("");
  return `<svg id="inc-chart" viewBox="0 0 ${W} ${H}" class="chart-svg">
    <text x="0" y="12" class="axis">${max.toFixed(0)}</text><line x1="${left}" y1="${H - bottom}" x2="${W}" y2="${H - bottom}" stroke="#999"/>${bars}
    <polyline points="${line}" fill="none" stroke="#e07a1f" stroke-width="2"/>
    <line id="inc-detection" x1="${dx}" y1="6" x2="${dx}" y2="${H - bottom}" stroke="#c62828" stroke-width="2" stroke-dasharray="4 3"/>
    <circle cx="${dx}" cy="8" r="4" fill="#c62828"/>${ticks}</svg>`;
}

async function incidentDetail(id) {
  const base = `/v1/incidents/${encodeURIComponent(id)}`;
  // A young incident in 10-minute steps over 8 hours; an older one by the hour over 2 days.
  const opened = $(`#inc-table tr[data-incident="${CSS.escape(id)}"]`)?.dataset.opened;
  const young = Date.now() - new Date(opened || 0).getTime() < 6 * 3600000;
  const steps = young ? "points=48&step_minutes=10" : "points=48&step_minutes=60";
  const [r, series] = await Promise.all([api("GET", base), api("GET", `${base}/series?${steps}`)]);
  const out = $("#inc-detail");
  out.dataset.incident = id;
  if (r.status !== 200 || series.status !== 200) { out.innerHTML = `<p class="error">${esc(errorText(r.status !== 200 ? r : series))}</p>`; return; }
  const i = r.data, d = i.detection, sum = i.summary;
  const words = (list) => list.map((w) => `<span class="badge" title="${pct(w.share)} / ${pct(w.usual_share)}">${esc(w.word)}</span>`).join(" ");
  const buttons = [["acknowledged", "inc.acknowledge"], ["resolved", "inc.resolve"], ["dismissed", "inc.dismiss"], ["open", "inc.reopen"]]
    .filter(([s]) => s !== i.status && !i.merged_into)
    .map(([s, key]) => `<button class="small${s === "dismissed" ? " secondary" : ""}" data-set="${s}">${t(key)}</button>`).join(" ");
  const links = i.links.slice(0, 100).map((l) => `<tr data-link="${esc(l.decision_id)}"><td>${when(l.linked_at)}</td><td><code>${esc(l.decision_id.slice(0, 13))}</code></td>
    <td>${esc(l.linked_by)}</td><td>${pct(l.probability)}</td><td class="why">${esc(l.reason)}</td>
    <td>${i.merged_into ? "" : `<button class="small secondary" data-unlink="${esc(l.decision_id)}">${t("inc.unlink")}</button>`}</td></tr>`).join("");
  out.innerHTML = `<div class="card" id="inc-card"><h3>${esc(i.intent)}${i.language ? " (" + esc(i.language) + ")" : ""}: <span id="inc-state">${esc(i.status)}</span> ${buttons}</h3>
    <p>${esc(t("inc.detected", { count: d.count, window: d.window_minutes, expected: d.expected.toFixed(1), p: d.p_value.toExponential(1) }))}</p>
    <h3>${esc(t("inc.chart", { intent: series.data.intent, step: series.data.step_minutes, share: pct(series.data.usual_share) }))}</h3>${incidentChart(series.data)}
    <p class="muted">${t("inc.legend")}</p>
    <div class="grid2"><div><h3>${t("inc.words")}</h3><p id="inc-words">${words(sum.top_words.en)} ${words(sum.top_words.ru)}</p></div>
    <div><h3>${t("inc.representative")}</h3><ul id="inc-representative">${sum.representative.map((x) => `<li>${esc(x.excerpt)}</li>`).join("")}</ul></div></div>
    <h3>${t("inc.links")} (${i.tickets})</h3><table class="table" id="inc-links"><tr><th>${t("conn.time")}</th><th>id</th><th>${t("inc.how")}</th><th>p</th><th>${t("inc.why")}</th><th></th></tr>${links}</table></div>`;
  out.querySelectorAll("[data-set]").forEach((b) => b.addEventListener("click", async () => {
    const x = await api("PATCH", base, { status: b.dataset.set });
    $("#inc-status").textContent = x.status === 200 ? t("inc.changed", { status: x.data.status }) : errorText(x);
    $("#inc-status").className = x.status === 200 ? "ok" : "error";
    loaders.incidents();
  }));
  out.querySelectorAll("[data-unlink]").forEach((b) => b.addEventListener("click", async () => {
    const x = await api("POST", `${base}/unlink`, { decisions: [b.dataset.unlink] });
    $("#inc-status").textContent = x.status === 200 ? t("inc.unlinked") : errorText(x);
    $("#inc-status").className = x.status === 200 ? "ok" : "error";
    incidentDetail(id);
  }));
}

async function modelReport(id) {
  const r = await api("GET", `/v1/models/${encodeURIComponent(id)}/report`);
  const out = $("#model-report");
  if (r.status !== 200) { out.innerHTML = `<p class="error">${esc(errorText(r))}</p>`; return; }
  const rep = r.data.report;
  const perIntent = Object.entries(rep.per_intent).map(([k, v]) => `<tr><td>${esc(k)}</td><td>${v.precision.toFixed(3)}</td><td>${v.recall.toFixed(3)}</td><td>${v.f1.toFixed(3)}</td><td>${v.support}</td></tr>`).join("");
  const labels = rep.confusion.labels;
  const max = Math.max(1, ...rep.confusion.matrix.flat());
  const heat = `<table class="table heat" id="heatmap"><tr><th></th>${labels.map((_, j) => `<th title="${esc(labels[j])}">${j + 1}</th>`).join("")}</tr>` +
    rep.confusion.matrix.map((row, i) => `<tr><th>${i + 1}. ${esc(labels[i])}</th>${row.map((v, j) => `<td data-heat="${v / max}" data-diag="${i === j ? 1 : 0}" title="${esc(labels[i])} → ${esc(labels[j])}: ${v}">${v || ""}</td>`).join("")}</tr>`).join("") + "</table>";
  const cal = rep.calibration.bins.filter((b) => b.n).map((b) => `<tr><td>${b.lo.toFixed(1)}–${b.hi.toFixed(1)}</td><td>${b.n}</td><td>${b.confidence.toFixed(3)}</td><td>${b.accuracy.toFixed(3)}</td></tr>`).join("");
  out.innerHTML = `<div class="card" id="report-card"><h3>${esc(id)}: accuracy ${rep.accuracy.toFixed(3)}, macro-F1 ${rep.macro_f1.toFixed(3)}, ECE ${rep.ece.toFixed(3)} (n=${rep.n})</h3>
    <div class="grid2"><div><h3>${t("models.per_intent")}</h3><table class="table"><tr><th></th><th>P</th><th>R</th><th>F1</th><th>n</th></tr>${perIntent}</table></div>
    <div><h3>${t("models.calibration")}</h3><table class="table"><tr><th></th><th>n</th><th>conf</th><th>acc</th></tr>${cal}</table></div></div>
    <h3>${t("models.confusion")}</h3>${heat}</div>`;
  out.querySelectorAll("td[data-heat]").forEach((td) => {
    const x = +td.dataset.heat;
    const hue = td.dataset.diag === "1" ? "47, 91, 211" : "198, 40, 40";
    td.style.background = x ? `rgba(${hue}, ${0.12 + 0.88 * x})` : "";
    if (x > 0.5) td.style.color = "#fff";
  });
}

async function shadowReport(id) {
  const r = await api("GET", `/v1/models/${encodeURIComponent(id)}/shadow-report`);
  const out = $("#model-report");
  if (r.status !== 200) { out.innerHTML = `<p class="error">${esc(errorText(r))}</p>`; return; }
  const s = r.data;
  out.innerHTML = `<div class="card" id="shadow-card"><p>${esc(t("models.agreement", { a: pct(s.agreement), n: s.tickets, c: s.corrected_tickets, ar: pct(s.active_accuracy_on_corrected), sr: pct(s.shadow_accuracy_on_corrected) }))}</p></div>`;
}

// ---- start ----

translate();
(async () => {
  const r = await api("GET", "/console/session");
  if (r.status === 200) { csrf = r.data.csrf; showApp(r.data.name); } else showLogin();
})();
