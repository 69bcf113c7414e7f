// Validates a .glb with the Khronos glTF validator and prints its report as JSON:
//   node tests/js/validate.mjs FILE.glb
import { readFile } from "node:fs/promises";
import validator from "gltf-validator";

const file = process.argv[2];
const report = await validator.validateBytes(new Uint8Array(await readFile(file)), {
  maxIssues: 100,
});
console.log(JSON.stringify(report.issues));
