// Calls the gateway with the official SDKs, changing only baseURL and apiKey.
// Usage: node sdk_check.mjs <gateway origin> <gateway key>; prints one JSON line.
import OpenAI from "openai";
import Anthropic from "@anthropic-ai/sdk";

const [origin, key] = process.argv.slice(2);
const out = {};

const openai = new OpenAI({ baseURL: `${origin}/v1`, apiKey: key, maxRetries: 0, timeout: 10000 });
const chat = await openai.chat.completions.create({
  model: "gpt-4o-mini",
  messages: [{ role: "user", content: "hello from the openai sdk" }],
});
out.openai = { model: chat.model, content: chat.choices?.[0]?.message?.content ?? null };

const anthropic = new Anthropic({ baseURL: `${origin}/anthropic`, apiKey: key, maxRetries: 0, timeout: 10000 });
const msg = await anthropic.messages.create({
  model: "claude-3-5-sonnet-latest",
  max_tokens: 16,
  messages: [{ role: "user", content: "hello from the anthropic sdk" }],
});
out.anthropic = { id: msg.id, text: msg.content?.[0]?.text ?? null };

console.log(JSON.stringify(out));
