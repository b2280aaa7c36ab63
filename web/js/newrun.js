// The form that starts a run: the pipeline as YAML or a path in the source, and a
// source directory on the server or a git URL with a ref.

import { postJson } from "./api.js";
import { h } from "./dom.js";
import { t } from "./i18n.js";

function idempotencyKey() {
  const bytes = crypto.getRandomValues(new Uint8Array(16));
  return Array.from(bytes, (byte) => byte.toString(16).padStart(2, "0")).join("");
}

export class NewRunView {
  constructor(container) {
    this.container = container;
    this.key = idempotencyKey(); // one per form, so a double submit starts one run
    this.render();
  }

  render() {
    const field = (name, label, input) => h("label", { class: "field" }, h("span", { text: label }), input);
    this.message = h("p", { class: "notice", id: "new-run-message" });
    const form = h("form", { class: "new-run", id: "new-run",
      onsubmit: async (event) => {
        event.preventDefault();
        await this.submit(new FormData(form));
      } },
    field("pipeline_yaml", t("new.pipelineYaml"), h("textarea", { name: "pipeline_yaml", rows: 10, spellcheck: "false" })),
    field("pipeline_path", t("new.pipelinePath"), h("input", { name: "pipeline_path", placeholder: ".cicd.yml" })),
    field("dir", t("new.sourceDir"), h("input", { name: "dir", placeholder: "/srv/checkouts/app" })),
    field("git", t("new.gitUrl"), h("input", { name: "git", placeholder: "https://git.example.com/team/app.git" })),
    field("ref", t("new.ref"), h("input", { name: "ref", placeholder: "main" })),
    field("tenant", t("new.tenant"), h("input", { name: "tenant", value: "default" })),
    h("button", { type: "submit", class: "primary", text: t("new.submit") }),
    this.message);
    this.container.replaceChildren(h("section", { class: "new-run-view" }, h("h1", { text: t("new.title") }), form));
  }

  async submit(data) {
    const value = (name) => String(data.get(name) || "").trim();
    if (!value("dir") && !value("git")) {
      this.message.textContent = t("new.needSource");
      return;
    }
    if (value("dir") && value("git")) {
      this.message.textContent = t("new.twoSources");
      return;
    }
    const body = {
      source: value("dir") ? { dir: value("dir") } : { git: value("git"), ...(value("ref") ? { ref: value("ref") } : {}) },
      tenant: value("tenant") || "default",
      trigger: "console",
    };
    if (value("pipeline_yaml")) body.pipeline_yaml = String(data.get("pipeline_yaml"));
    else if (value("pipeline_path")) body.pipeline_path = value("pipeline_path");
    try {
      const run = await postJson("/api/v1/runs", body, { "Idempotency-Key": this.key });
      location.hash = `#/runs/${encodeURIComponent(run.id)}`;
    } catch (error) {
      this.message.textContent = t("error.request", { message: error.message });
    }
  }

  relabel() {
    this.render();
  }

  destroy() {}
}
