// Issue 17: official SDKs against the gateway with only the base URL and the
// API key changed. Usage: node sdk_i17.mjs <gateway origin> <gateway key> <case>;
// prints one JSON line. Cases: google, google_stream, google_bad_key,
// anthropic_bad_key, openai_bad_key.
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";
import { GoogleGenAI } from "@google/genai";

const [origin, key, which] = process.argv.slice(2);
const google = () => new GoogleGenAI({ apiKey: key, httpOptions: { baseUrl: `${origin}/google` } });
const ask = { model: "gemini-2.0-flash", contents: "hello from the google sdk" };

async function failure(call) {
  try {
    await call();
    return { ok: true };
  } catch (e) {
    return { status: e.status ?? null, name: e.constructor?.name ?? null, message: String(e.message),
             type: e.error?.error?.type ?? e.error?.type ?? null };
  }
}

const cases = {
  google: async () => ({ text: (await google().models.generateContent(ask)).text }),
  google_stream: async () => {
    let text = "";
    for await (const chunk of await google().models.generateContentStream(ask)) text += chunk.text ?? "";
    return { text };
  },
  google_bad_key: () => failure(() => google().models.generateContent(ask)),
  anthropic_bad_key: () => failure(() =>
    new Anthropic({ baseURL: `${origin}/anthropic`, apiKey: key, maxRetries: 0 }).messages.create({
      model: "claude-3-5-sonnet-latest", max_tokens: 8, messages: [{ role: "user", content: "hi" }],
    })),
  openai_bad_key: () => failure(() =>
    new OpenAI({ baseURL: `${origin}/v1`, apiKey: key, maxRetries: 0 }).chat.completions.create({
      model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }],
    })),
};

console.log(JSON.stringify(await cases[which]()));
