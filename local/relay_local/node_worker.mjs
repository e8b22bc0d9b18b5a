// The process one Node.js function runs in: relay_local/worker.py's twin for nodejs runtimes.
//
// Same protocol (JSON lines over the socket whose file descriptor is argv[2]): a spec first,
// then one invocation at a time. The function's own stdout and stderr stay free for its logs.
// What the function may import is what Lambda gives it: its code's node_modules, the
// dependencies of its package.json, its layers and the runtime's AWS SDK v3 (spec.import_path),
// for ES modules (a resolve hook) and CommonJS (NODE_PATH) alike. Requests its SDK sends to
// the local API's execute-api host, or to the local API's port, go to relay-local's own
// @connections over plain HTTP.

import http from "node:http";
import https from "node:https";
import net from "node:net";
import { register, syncBuiltinESMExports } from "node:module";
import path from "node:path";
import readline from "node:readline";
import { pathToFileURL } from "node:url";
import fs from "node:fs";

const EXECUTE_API_HOST = /^([a-z0-9]+)\.execute-api\.[a-z0-9-]+\.amazonaws\.com(?:\.cn)?$/;

function localTarget(options, spec) {
  if (!spec.management_endpoint) return null;
  const local = new URL(spec.management_endpoint);
  const host = String(options.hostname || options.host || "").replace(/:\d+$/, "");
  const port = Number(options.port || 443);
  const match = EXECUTE_API_HOST.exec(host);
  if (port === Number(local.port) || (match && match[1] === spec.api_id)) {
    return { host: local.hostname, port: Number(local.port) };
  }
  return null;
}

function redirectManagementApi(spec) {
  const original = https.request;
  https.request = function request(...args) {
    const options = typeof args[0] === "string" || args[0] instanceof URL ? null : args[0];
    const target = options ? localTarget(options, spec) : null;
    if (!target) return original.apply(this, args);
    const plain = { ...options, host: target.host, hostname: target.host, port: target.port, protocol: "http:" };
    delete plain.agent;
    return http.request(plain, ...args.slice(1));
  };
  syncBuiltinESMExports();
}

function errorPayload(error, type) {
  const isError = error instanceof Error;
  return {
    errorType: type || (isError ? error.name : typeof error),
    errorMessage: isError ? error.message : String(error),
    trace: isError && error.stack ? error.stack.split("\n") : [],
  };
}

function send(channel, message) {
  let line;
  try {
    line = JSON.stringify(message);
  } catch (error) {
    line = JSON.stringify({ id: message.id, error: errorPayload(error, "Runtime.MarshalError") });
  }
  channel.write(line + "\n");
}

async function loadHandler(spec) {
  const [modulePath, name] = [spec.handler.slice(0, spec.handler.lastIndexOf(".")), spec.handler.slice(spec.handler.lastIndexOf(".") + 1)];
  const base = path.join(spec.code_dir, modulePath);
  const file = [".mjs", ".js", ".cjs"].map((suffix) => base + suffix).find((candidate) => fs.existsSync(candidate));
  if (!file) throw Object.assign(new Error(`Cannot find module '${modulePath}'`), { name: "Runtime.ImportModuleError" });
  const module = await import(pathToFileURL(file).href);
  const handler = module[name] ?? module.default?.[name];
  if (typeof handler !== "function") {
    throw Object.assign(new Error(`${modulePath}.${name} is undefined or not exported`), { name: "Runtime.HandlerNotFound" });
  }
  return handler;
}

function context(spec, request) {
  return {
    functionName: spec.function_name,
    functionVersion: "$LATEST",
    invokedFunctionArn: spec.function_arn,
    memoryLimitInMB: String(spec.memory_mb),
    awsRequestId: request.request_id,
    logGroupName: process.env.AWS_LAMBDA_LOG_GROUP_NAME,
    logStreamName: process.env.AWS_LAMBDA_LOG_STREAM_NAME,
    callbackWaitsForEmptyEventLoop: true,
    getRemainingTimeInMillis: () => Math.max(request.deadline_epoch_ms - Date.now(), 0),
  };
}

function run(handler, event, ctx) {
  return new Promise((resolve, reject) => {
    const callback = (error, result) => (error ? reject(error) : resolve(result));
    try {
      const answer = handler(event, ctx, callback);
      if (answer && typeof answer.then === "function") answer.then(resolve, reject);
      else if (handler.length < 3) resolve(answer);
    } catch (error) {
      reject(error);
    }
  });
}

async function main() {
  const channel = new net.Socket({ fd: Number(process.argv[2]), readable: true, writable: true });
  const lines = readline.createInterface({ input: channel, crlfDelay: Infinity });
  let spec = null;
  let handler = null;
  for await (const line of lines) {
    if (spec === null) {
      spec = JSON.parse(line);
      process.chdir(spec.code_dir);
      register(new URL("./node_loader.mjs", import.meta.url), { data: { folders: spec.import_path } });
      redirectManagementApi(spec);
      try {
        handler = await loadHandler(spec);
      } catch (error) {
        const payload = errorPayload(error, error?.name?.startsWith("Runtime.") ? error.name : "Runtime.ImportModuleError");
        console.error(`ERROR\t${JSON.stringify(payload)}`);
        send(channel, { ready: false, error: payload });
        channel.end();
        return;
      }
      send(channel, { ready: true });
      continue;
    }
    const request = JSON.parse(line);
    try {
      const result = await run(handler, request.event, context(spec, request));
      send(channel, { id: request.id, result: result === undefined ? null : result });
    } catch (error) {
      const payload = errorPayload(error);
      console.error(`ERROR\tInvoke Error \t${JSON.stringify(payload)}`);
      send(channel, { id: request.id, error: payload });
    }
  }
  process.exit(0);
}

main();
