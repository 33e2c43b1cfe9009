// The `AI` binding for local runs and tests. Workers AI has no local implementation, so
// this class stands in for it: `run(model, inputs)` posts the call as JSON to the backend
// service binding `AI_BACKEND` (the launcher's AI stub, or the local classifier) and answers
// like the real binding: the model's output on success; on failure it throws an `Error`
// named `InferenceUpstreamError` whose message is `"<code>: <description>"`, as workerd's
// binding does (e.g. "3040: out of capacity").
//
// Miniflare loads it as a wrapped binding; worker::Env::ai() insists that the binding's
// constructor is named `Ai`, so the class keeps that name.

export class Ai {
  constructor(env) {
    this.backend = env.AI_BACKEND;
  }

  async run(model, inputs) {
    const response = await this.backend.fetch("http://ai-backend/run", {
      method: "POST",
      headers: { "content-type": "application/json" },
      body: JSON.stringify({ model, ...inputs }),
    });
    const text = await response.text();
    let body;
    try {
      body = JSON.parse(text);
    } catch {
      body = undefined;
    }
    if (!response.ok) {
      const error = body?.errors?.[0];
      const code = error?.code ?? response.status;
      const detail = error?.message ?? text;
      // Workers AI messages lead with their code; add it unless the backend already did.
      throw upstreamError(detail.startsWith(`${code}:`) ? detail : `${code}: ${detail}`);
    }
    return body;
  }
}

function upstreamError(message) {
  const error = new Error(message);
  error.name = "InferenceUpstreamError";
  return error;
}

export default function (env) {
  return new Ai(env);
}
