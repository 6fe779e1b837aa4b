// Issue 17 done-when: the official OpenAI and Anthropic SDKs against the
// gateway with only the base URL (<gateway>/v1 or <gateway>/<provider>) and
// the API key (the gateway key) changed. Usage:
//   node sdk_i17_uploads.mjs <gateway origin> <gateway key> <case>
// prints one JSON line. Cases: transcription, file_upload, chat_stream,
// embeddings, models, openai_native, retries, anthropic_stream.
import OpenAI, { toFile } from "openai";
import Anthropic from "@anthropic-ai/sdk";

const [origin, key, which] = process.argv.slice(2);
const unified = (opts = {}) => new OpenAI({ baseURL: `${origin}/v1`, apiKey: key, maxRetries: 0, ...opts });

// Audio-like bytes with CRLFs and dashes, 300 KiB.
const audio = Buffer.alloc(300 * 1024);
for (let i = 0; i < audio.length; i++) audio[i] = i % 97 === 0 ? 13 : i % 89 === 0 ? 45 : (i * 7) & 255;

const cases = {
  transcription: async () => {
    const t = await unified().audio.transcriptions.create({
      file: await toFile(audio, "speech.mp3", { type: "audio/mpeg" }),
      model: "gpt-4o-transcribe",
    });
    return { text: t.text, bytes: audio.length, sha: (await import("node:crypto")).createHash("sha256").update(audio).digest("hex") };
  },
  file_upload: async () => {
    const f = await unified().files.create({
      file: await toFile(Buffer.from('{"custom_id":"1","body":{"model":"gpt-4o-mini"}}\n'), "batch.jsonl"),
      purpose: "batch",
    });
    return { id: f.id };
  },
  chat_stream: async () => {
    let text = "";
    const stream = await unified().chat.completions.create({
      model: "gpt-4o-mini", stream: true, messages: [{ role: "user", content: "hi" }],
    });
    for await (const chunk of stream) text += chunk.choices?.[0]?.delta?.content ?? "";
    return { text };
  },
  embeddings: async () => {
    const e = await unified().embeddings.create({ model: "text-embedding-3-small", input: "hi" });
    return { dims: e.data[0].embedding.length };
  },
  models: async () => {
    const ids = [];
    for await (const m of unified().models.list()) ids.push(m.id);
    return { ids };
  },
  openai_native: async () => {
    const openai = new OpenAI({ baseURL: `${origin}/openai`, apiKey: key, maxRetries: 0 });
    const chat = await openai.chat.completions.create({
      model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }],
    });
    return { content: chat.choices[0].message.content };
  },
  retries: async () => {
    try {
      await unified({ maxRetries: 2 }).chat.completions.create({
        model: "gpt-4o-mini", messages: [{ role: "user", content: "hi" }],
      });
      return { ok: true };
    } catch (e) {
      return { status: e.status ?? null };
    }
  },
  anthropic_stream: async () => {
    const anthropic = new Anthropic({ baseURL: `${origin}/anthropic`, apiKey: key, maxRetries: 0 });
    const stream = anthropic.messages.stream({
      model: "claude-3-5-sonnet-latest", max_tokens: 16,
      messages: [{ role: "user", content: "hi" }],
    });
    let text = "";
    stream.on("text", (t) => { text += t; });
    const final = await stream.finalMessage();
    return { text, stop: final.stop_reason };
  },
};

console.log(JSON.stringify(await cases[which]()));
