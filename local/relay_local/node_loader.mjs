// A module resolve hook for node_worker.mjs: a bare specifier that Node.js cannot resolve from
// the importing file is looked up in the function's other module folders (its package.json
// dependencies, its layers, the runtime's AWS SDK), as Lambda's Node.js runtimes make them
// importable from ES modules too.

import path from "node:path";
import { pathToFileURL } from "node:url";

let folders = [];

export async function initialize(data) {
  folders = data.folders;
}

export async function resolve(specifier, context, nextResolve) {
  try {
    return await nextResolve(specifier, context);
  } catch (error) {
    const bare = !specifier.startsWith(".") && !specifier.startsWith("/") && !specifier.includes(":");
    if (!bare || error?.code !== "ERR_MODULE_NOT_FOUND") throw error;
    for (const folder of folders) {
      const parentURL = pathToFileURL(path.join(folder, "..", "relay-local-resolver.js")).href;
      try {
        return await nextResolve(specifier, { ...context, parentURL });
      } catch {
        // not in this folder
      }
    }
    throw error;
  }
}
