// The `AI` binding for local runs and tests. Workers AI has no local implementation, so
// this class stands in for it: `run(model, inputs)` forwards the call as JSON to an HTTP
// endpoint (the local classifier, or a test's scriptable stub) and answers like the real
// binding: the model's output on success, or an Error whose message starts with the Workers
// AI error code (e.g. "3040: Capacity temporarily exceeded").
//
// Miniflare loads it as a wrapped binding; worker::Env::ai() insists that the binding's
// constructor is named `Ai`, so the class keeps that name.
export class Ai {
  constructor(env) {
    this.endpoint = env.AI_ENDPOINT;
  }

  async run(model, inputs) {
    const response = await fetch(this.endpoint, {
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
      const detail = error?.message ?? text;
      const code = error?.code ?? response.status;
      // Workers AI messages lead with their code; add it unless the service already did.
      const message = detail.startsWith(`${code}:`) ? detail : `${code}: ${detail}`;
      throw new Error(message);
    }
    return body;
  }
}

export default function (env) {
  return new Ai(env);
}
