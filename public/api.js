// Renders /openapi.json as a reference page: operations grouped by tag, with their parameters,
// request body and every answer (error codes included). Plain DOM, text only (no innerHTML).
"use strict";

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) node.setAttribute(k, v);
  for (const c of children) node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return node;
}

function schemaText(schema) {
  return JSON.stringify(schema, null, 2);
}

function describeSchema(schema) {
  if (!schema) return "";
  if (schema.enum) return schema.enum.join(" | ");
  const parts = [schema.type || ""];
  if (schema.pattern) parts.push(`pattern ${schema.pattern}`);
  return parts.join(", ");
}

function parametersTable(params) {
  const rows = params.map((p) =>
    el("tr", {}, el("td", {}, el("code", {}, p.name)), el("td", {}, p.in), el("td", {}, p.required ? "required" : ""), el("td", {}, describeSchema(p.schema)), el("td", {}, p.description || (p.schema && p.schema.description) || "")),
  );
  return el("table", {}, el("tr", {}, el("th", {}, "parameter"), el("th", {}, "in"), el("th", {}, ""), el("th", {}, "schema"), el("th", {}, "")), ...rows);
}

function responses(op) {
  const rows = Object.entries(op.responses || {}).map(([status, r]) => {
    const media = r.content && Object.entries(r.content)[0];
    const cell = el("td", {}, r.description || "");
    if (media && media[1].schema) cell.append(el("details", {}, el("summary", {}, media[0]), el("pre", {}, schemaText(media[1].schema))));
    return el("tr", {}, el("td", { class: Number(status) < 400 ? "status-ok" : "status-err" }, status), cell);
  });
  return el("table", {}, el("tr", {}, el("th", {}, "status"), el("th", {}, "answer")), ...rows);
}

function operation(path, method, op) {
  const id = op.operationId || `${method}-${path}`;
  const box = el("section", { class: "op", id }, el("h3", {}, el("span", { class: `method ${method}` }, method), el("code", {}, path), " — ", op.summary || ""));
  if (op.description) box.append(el("p", {}, op.description));
  const security = (op.security || []).flatMap((s) => Object.keys(s));
  box.append(el("p", {}, `Auth: ${security.length ? security.join(" or ") : "none"}`));
  if (op.parameters && op.parameters.length) box.append(parametersTable(op.parameters));
  if (op.requestBody) {
    const [media, body] = Object.entries(op.requestBody.content || {})[0] || ["", {}];
    box.append(el("details", {}, el("summary", {}, `Body (${media}${op.requestBody.required ? ", required" : ""})`), el("pre", {}, schemaText(body.schema))));
  }
  box.append(responses(op));
  return box;
}

async function render() {
  const main = document.getElementById("operations");
  const res = await fetch("/openapi.json");
  const doc = await res.json();
  document.getElementById("title").textContent = `${doc.info.title} ${doc.info.version}`;
  document.getElementById("description").textContent = doc.info.description || "";
  const byTag = new Map((doc.tags || []).map((t) => [t.name, []]));
  for (const [path, item] of Object.entries(doc.paths)) {
    for (const [method, op] of Object.entries(item)) {
      const tag = (op.tags && op.tags[0]) || "other";
      if (!byTag.has(tag)) byTag.set(tag, []);
      byTag.get(tag).push(operation(path, method, op));
    }
  }
  main.replaceChildren();
  const toc = document.getElementById("toc");
  for (const [tag, ops] of byTag) {
    if (ops.length === 0) continue;
    toc.append(el("a", { href: `#tag-${tag}` }, tag));
    main.append(el("h2", { id: `tag-${tag}` }, tag), ...ops);
  }
  document.body.dataset.ready = String([...byTag.values()].reduce((n, ops) => n + ops.length, 0));
}

render().catch((err) => {
  document.getElementById("operations").replaceChildren(el("p", {}, `Could not load /openapi.json: ${err}`));
});
