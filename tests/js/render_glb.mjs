// Renders a .glb with three.js' GLTFLoader in headless Chromium and saves the canvas as a PNG:
//   node tests/js/render_glb.mjs IN.glb OUT.png [SIZE=256]
// The model is expected unit-sized and centred; the orthographic camera frames [-0.75, 0.75]
// in x and y, looking along -Z with Y up. Chromium is Debian's (override with $CHROMIUM);
// everything the page loads comes from a local server, since the machine has no internet.
import { createServer } from "node:http";
import { readFile } from "node:fs/promises";
import { dirname, join, normalize, sep } from "node:path";
import { fileURLToPath } from "node:url";
import { chromium } from "playwright-core";

const [input, output, sizeArg = "256"] = process.argv.slice(2);
const size = Number(sizeArg);
if (!input || !output || !(size > 0)) {
  console.error("usage: node tests/js/render_glb.mjs IN.glb OUT.png [SIZE=256]");
  process.exit(2);
}
const threeDir = join(dirname(fileURLToPath(import.meta.url)), "node_modules", "three");

const page = `<!doctype html>
<html><head><link rel="icon" href="data:,"></head><body style="margin:0; background:#000">
<script type="importmap">
{ "imports": { "three": "/three/build/three.module.js", "three/addons/": "/three/examples/jsm/" } }
</script>
<script type="module">
import * as THREE from "three";
import { GLTFLoader } from "three/addons/loaders/GLTFLoader.js";
try {
  const renderer = new THREE.WebGLRenderer({ antialias: false, preserveDrawingBuffer: true });
  renderer.setSize(${size}, ${size});
  renderer.setClearColor(0x000000, 1);
  document.body.appendChild(renderer.domElement);
  const scene = new THREE.Scene();
  // The exports are unlit, so this changes nothing for them; it only keeps a lit material visible.
  scene.add(new THREE.AmbientLight(0xffffff, 1));
  const camera = new THREE.OrthographicCamera(-0.75, 0.75, 0.75, -0.75, 0.1, 10);
  camera.position.set(0, 0, 3);
  camera.up.set(0, 1, 0);
  camera.lookAt(0, 0, 0);
  const gltf = await new GLTFLoader().loadAsync("/model.glb");
  scene.add(gltf.scene);
  renderer.render(scene, camera);
  window.__done = true;
} catch (e) {
  window.__error = String(e?.stack ?? e);
}
</script>
</body></html>`;

// Serves the page, the model and the files under node_modules/three, nothing else.
async function serve(req, res) {
  const path = new URL(req.url, "http://127.0.0.1").pathname;
  const send = (type, body) => res.writeHead(200, { "content-type": type }).end(body);
  try {
    if (path === "/") return send("text/html", page);
    if (path === "/model.glb") return send("model/gltf-binary", await readFile(input));
    const file = normalize(join(threeDir, path.slice("/three/".length)));
    if (path.startsWith("/three/") && file.startsWith(threeDir + sep)) {
      return send("text/javascript", await readFile(file));
    }
  } catch {}
  res.writeHead(404).end();
}

const server = createServer(serve);
await new Promise((resolve) => server.listen(0, "127.0.0.1", resolve));
const url = `http://127.0.0.1:${server.address().port}/`;

// Playwright itself passes --headless, --no-sandbox, a temporary profile, the switches that keep
// Chromium off the network (background networking, component update, sync) and
// --enable-unsafe-swiftshader, which headless WebGL needs. --disable-gpu makes every machine draw
// with that same software rasteriser, even one that has a GPU.
const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--disable-gpu"],
});
let status = 0;
try {
  const tab = await browser.newPage({ viewport: { width: size, height: size } });
  const log = [];
  tab.on("console", (m) => m.type() === "error" && log.push(m.text()));
  tab.on("pageerror", (e) => log.push(String(e)));
  await tab.goto(url);
  const failure = await tab
    .waitForFunction(() => window.__done || window.__error, null, { timeout: 60_000 })
    .then(() => tab.evaluate(() => window.__error), (e) => String(e));
  if (failure) {
    console.error(`render_glb: rendering ${input} failed: ${failure}\n${log.join("\n")}`);
    status = 1;
  } else {
    await tab.locator("canvas").screenshot({ path: output });
  }
} finally {
  await browser.close();
  server.close();
}
process.exit(status);
