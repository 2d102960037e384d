// mcpd's /v1 surface driven by the official SDKs, as an application would
// use them: the `openai` package for chat, embeddings, completions,
// responses and models, `@anthropic-ai/sdk` for Anthropic's Messages API,
// and the Vercel AI SDK (`ai` with its default OpenAI provider,
// `@ai-sdk/openai`, whose openai(model) speaks the Responses API).
//
// Environment: MCPD_URL (e.g. http://127.0.0.1:8080), TOKEN (an mcpd
// token), MODEL (a published Llm whose backend answers as the test
// suite's fake backend does: "hello from fake" for a whole answer, deltas
// "tok0", "tok1", ... for a stream). One line per check; exits 1 when any
// check failed, 2 when the environment is incomplete.
import OpenAI from 'openai';
import Anthropic from '@anthropic-ai/sdk';
import { APICallError, generateText, streamText } from 'ai';
import { createOpenAI } from '@ai-sdk/openai';

const { MCPD_URL, TOKEN, MODEL } = process.env;
if (!MCPD_URL || !TOKEN || !MODEL) {
  console.error('sdk_check: set MCPD_URL, TOKEN and MODEL');
  process.exit(2);
}
const CHUNKS = Number(process.env.CHUNKS || 3);
const TOKENS = Array.from({ length: CHUNKS }, (_, i) => `tok${i}`).join('');
const WHOLE = 'hello from fake';

// No retries: a failure must show, not be papered over.
const openai = new OpenAI({ baseURL: `${MCPD_URL}/v1`, apiKey: TOKEN, maxRetries: 0, timeout: 20000 });
const anthropic = new Anthropic({ baseURL: MCPD_URL, apiKey: TOKEN, maxRetries: 0, timeout: 20000 });
const aisdk = createOpenAI({ baseURL: `${MCPD_URL}/v1`, apiKey: TOKEN });

let failures = 0;

function describe(e) {
  if (e instanceof OpenAI.APIError || e instanceof Anthropic.APIError) {
    return `${e.constructor.name} status=${e.status} ${e.message} body=${JSON.stringify(e.error)}`;
  }
  if (APICallError.isInstance(e)) {
    return `APICallError status=${e.statusCode} url=${e.url} ${e.message} body=${e.responseBody}`;
  }
  return e && e.stack ? e.stack : String(e);
}

async function check(name, fn) {
  try {
    const detail = await fn();
    console.log(`ok   ${name}${detail ? ` (${detail})` : ''}`);
  } catch (e) {
    failures++;
    console.log(`FAIL ${name}: ${describe(e)}`);
  }
}

function expect(cond, what, got) {
  if (!cond) throw new Error(`${what}; got ${JSON.stringify(got)}`);
}

function expectEqual(got, want, what) {
  expect(JSON.stringify(got) === JSON.stringify(want), `${what}: want ${JSON.stringify(want)}`, got);
}

// Expects fn to throw an SDK error of the given class and status.
async function expectError(fn, cls, status) {
  let err;
  try {
    await fn();
  } catch (e) {
    err = e;
  }
  expect(err instanceof cls, `want ${cls.name}`, err ? describe(err) : 'no error');
  expectEqual(err.status, status, 'status');
  return err;
}

const user = [{ role: 'user', content: 'hi' }];

// ---- openai ----

await check('openai chat.completions.create', async () => {
  const r = await openai.chat.completions.create({ model: MODEL, messages: user });
  expectEqual(r.object, 'chat.completion', 'object');
  expectEqual(r.choices[0].message.content, WHOLE, 'content');
  return `model ${r.model}`;
});

await check('openai chat.completions.create stream', async () => {
  const stream = await openai.chat.completions.create({ model: MODEL, messages: user, stream: true });
  let text = '';
  let chunks = 0;
  for await (const chunk of stream) {
    expectEqual(chunk.object, 'chat.completion.chunk', 'chunk object');
    text += chunk.choices[0]?.delta?.content ?? '';
    chunks++;
  }
  expectEqual(text, TOKENS, 'streamed text');
  return `${chunks} chunks`;
});

await check('openai embeddings.create (the SDK asks for base64)', async () => {
  const r = await openai.embeddings.create({ model: MODEL, input: 'hello' });
  expectEqual(r.object, 'list', 'object');
  expectEqual(r.data.length, 1, 'data.length');
  expectEqual(Array.from(r.data[0].embedding), [0.5, -0.25, 0.125], 'embedding');
  return `${r.data[0].embedding.length} dimensions`;
});

await check('openai embeddings.create encoding_format float, two inputs', async () => {
  const r = await openai.embeddings.create({ model: MODEL, input: ['a', 'b'], encoding_format: 'float' });
  expectEqual(r.data.map((d) => d.index), [0, 1], 'indexes');
  expectEqual(r.data[1].embedding, [0.5, -0.25, 0.125], 'embedding');
});

await check('openai completions.create', async () => {
  const r = await openai.completions.create({ model: MODEL, prompt: 'Say hi', max_tokens: 5 });
  expectEqual(r.object, 'text_completion', 'object');
  expectEqual(r.choices[0].text, WHOLE, 'text');
});

await check('openai completions.create stream', async () => {
  const stream = await openai.completions.create({ model: MODEL, prompt: 'Say hi', stream: true });
  let text = '';
  for await (const chunk of stream) text += chunk.choices[0]?.text ?? '';
  expectEqual(text, TOKENS, 'streamed text');
});

await check('openai responses.create', async () => {
  const r = await openai.responses.create({ model: MODEL, input: 'hi' });
  expectEqual(r.object, 'response', 'object');
  expectEqual(r.status, 'completed', 'status');
  expectEqual(r.output_text, WHOLE, 'output_text');
});

await check('openai responses.create stream', async () => {
  const stream = await openai.responses.create({ model: MODEL, input: 'hi', stream: true });
  const types = [];
  let text = '';
  let completed;
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed') completed = ev.response;
  }
  expectEqual(types[0], 'response.created', 'first event');
  expectEqual(types[types.length - 1], 'response.completed', 'last event');
  expectEqual(text, TOKENS, 'streamed text');
  expectEqual(completed?.status, 'completed', 'final status');
  return `${types.length} events`;
});

await check('openai responses.stream finalResponse', async () => {
  const stream = openai.responses.stream({ model: MODEL, input: 'hi' });
  let text = '';
  stream.on('response.output_text.delta', (ev) => {
    text += ev.delta;
  });
  const final = await stream.finalResponse();
  expectEqual(text, TOKENS, 'streamed text');
  expectEqual(final.output_text, TOKENS, 'final output_text');
});

await check('openai models.retrieve', async () => {
  const m = await openai.models.retrieve(MODEL);
  expectEqual(m.id, MODEL, 'id');
  expectEqual(m.object, 'model', 'object');
  expect(typeof m.created === 'number' && typeof m.owned_by === 'string', 'created, owned_by', m);
  return `owned by ${m.owned_by}`;
});

await check('openai models.list holds the model', async () => {
  const ids = [];
  for await (const m of openai.models.list()) ids.push(m.id);
  expect(ids.includes(MODEL), `want ${MODEL} listed`, ids);
});

await check('openai errors: unknown model is NotFoundError', async () => {
  await expectError(() => openai.models.retrieve('no-such-model'), OpenAI.NotFoundError, 404);
  const e = await expectError(
    () => openai.embeddings.create({ model: 'no-such-model', input: 'x' }),
    OpenAI.NotFoundError,
    404,
  );
  expect(typeof e.error?.message === 'string', 'an OpenAI error object', e.error);
});

await check('openai errors: bad key is AuthenticationError', async () => {
  const bad = new OpenAI({ baseURL: `${MCPD_URL}/v1`, apiKey: 'not-a-token', maxRetries: 0 });
  await expectError(() => bad.completions.create({ model: MODEL, prompt: 'x' }), OpenAI.AuthenticationError, 401);
});

// ---- @anthropic-ai/sdk ----

const messages = [{ role: 'user', content: 'hello' }];

await check('anthropic messages.create', async () => {
  const m = await anthropic.messages.create({ model: MODEL, max_tokens: 16, messages });
  expectEqual(m.type, 'message', 'type');
  expectEqual(m.role, 'assistant', 'role');
  expectEqual(m.content[0].type === 'text' && m.content[0].text, WHOLE, 'text');
  expectEqual(m.stop_reason, 'end_turn', 'stop_reason');
});

await check('anthropic messages.create stream', async () => {
  const stream = await anthropic.messages.create({ model: MODEL, max_tokens: 16, messages, stream: true });
  const types = [];
  let text = '';
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === 'content_block_delta' && ev.delta.type === 'text_delta') text += ev.delta.text;
  }
  expectEqual(types[0], 'message_start', 'first event');
  expectEqual(types[types.length - 1], 'message_stop', 'last event');
  expectEqual(text, TOKENS, 'streamed text');
  return `${types.length} events`;
});

await check('anthropic messages.stream finalMessage', async () => {
  const stream = anthropic.messages.stream({ model: MODEL, max_tokens: 16, messages });
  let text = '';
  stream.on('text', (t) => {
    text += t;
  });
  const final = await stream.finalMessage();
  expectEqual(text, TOKENS, 'streamed text');
  expectEqual(final.content[0].text, TOKENS, 'final text');
  expectEqual(final.stop_reason, 'end_turn', 'stop_reason');
});

await check('anthropic errors: unknown model is NotFoundError', async () => {
  const e = await expectError(
    () => anthropic.messages.create({ model: 'no-such-model', max_tokens: 5, messages }),
    Anthropic.NotFoundError,
    404,
  );
  expectEqual(e.error?.type, 'error', 'body type');
  expectEqual(e.error?.error?.type, 'not_found_error', 'error type');
});

await check('anthropic errors: bad key is AuthenticationError', async () => {
  const bad = new Anthropic({ baseURL: MCPD_URL, apiKey: 'not-a-token', maxRetries: 0 });
  const e = await expectError(
    () => bad.messages.create({ model: MODEL, max_tokens: 5, messages }),
    Anthropic.AuthenticationError,
    401,
  );
  expectEqual(e.error?.error?.type, 'authentication_error', 'error type');
});

// ---- ai (Vercel AI SDK) with @ai-sdk/openai ----

// The default model factory: openai(model) is the Responses API model.
const aiModel = aisdk(MODEL);
const prompt = 'hi';

await check('ai generateText (openai provider, Responses API)', async () => {
  const r = await generateText({
    model: aiModel,
    prompt,
    maxRetries: 0,
    abortSignal: AbortSignal.timeout(20000),
  });
  expectEqual(r.text, WHOLE, 'text');
  expectEqual(r.finishReason, 'stop', 'finishReason');
  const id = r.providerMetadata?.openai?.responseId;
  expect(typeof id === 'string' && id.length > 0, 'a Responses API response id', r.providerMetadata);
  return `response ${id}`;
});

await check('ai streamText textStream (openai provider, Responses API)', async () => {
  let streamError;
  const r = streamText({
    model: aiModel,
    prompt,
    maxRetries: 0,
    abortSignal: AbortSignal.timeout(20000),
    // streamText reports errors here rather than throwing from textStream.
    onError: ({ error }) => {
      streamError ??= error;
    },
  });
  const parts = [];
  for await (const t of r.textStream) parts.push(t);
  if (streamError) throw streamError;
  const text = parts.join('');
  expect(parts.length > 0 && text.length > 0, 'a non-empty text stream', parts);
  expectEqual(text, TOKENS, 'streamed text');
  expectEqual(await r.finishReason, 'stop', 'finishReason');
  return `${parts.length} parts`;
});

if (failures) {
  console.log(`sdk_check: ${failures} check(s) failed`);
  process.exit(1);
}
console.log('sdk_check: all checks passed');
