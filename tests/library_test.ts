/**
 * mod.ts is a library for any Deno project: a script in a fresh directory with its own empty
 * deno.json (no package.json, no node_modules, no import map) imports it by file URL and runs a
 * tiny ResNet forward pass; the features equal the same forward run here, value for value.
 * Its npm dependencies come through versioned `npm:` specifiers (fetched from the npm registry
 * into Deno's cache on first use).
 */
import assert from "node:assert/strict";
import { gpuTest, Rng, testGpu } from "./util.ts";
import { Context } from "../models/layers.ts";
import { ResNet, type ResNetConfig } from "../models/resnet.ts";

const MOD = new URL("../mod.ts", import.meta.url).href;
const CONFIG: ResNetConfig = {
  arch: "resnet18",
  inChannels: 1,
  smallImage: true,
  widths: [4, 8, 8, 16],
};
const [BATCH, SIDE] = [2, 8];

const SCRIPT = `import { acquireGpu, Context, ResNet, Rng } from ${JSON.stringify(MOD)};
const gpu = await acquireGpu();
const ctx = new Context(gpu);
ctx.mode = "eval";
const net = new ResNet(ctx, ${JSON.stringify(CONFIG)}, new Rng(7));
const images = gpu.upload(new Rng(8).normals(${
  BATCH * SIDE * SIDE
}), [${BATCH}, ${SIDE}, ${SIDE}, 1]);
const features = net.forward(images);
const [values] = await gpu.read([features]);
console.log(JSON.stringify({ shape: features.shape, values: Array.from(values) }));
`;

Deno.test({
  name:
    "library: mod.ts imported from a fresh directory with an empty deno.json runs a forward pass",
  ...gpuTest,
  fn: async () => {
    const dir = await Deno.makeTempDir();
    await Deno.writeTextFile(`${dir}/deno.json`, "{}\n");
    await Deno.writeTextFile(`${dir}/main.ts`, SCRIPT);
    const { code, stdout, stderr } = await new Deno.Command(Deno.execPath(), {
      args: ["run", "-A", "--unstable-webgpu", "main.ts"],
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
    }).output();
    const errors = new TextDecoder().decode(stderr);
    assert.equal(code, 0, errors);
    const lines = new TextDecoder().decode(stdout).trim().split("\n");
    const printed = JSON.parse(lines[lines.length - 1]);
    assert.deepEqual(printed.shape, [BATCH, CONFIG.widths[3]]);

    const gpu = await testGpu();
    const ctx = new Context(gpu);
    ctx.mode = "eval";
    const net = new ResNet(ctx, CONFIG, new Rng(7));
    const images = gpu.upload(new Rng(8).normals(BATCH * SIDE * SIDE), [BATCH, SIDE, SIDE, 1]);
    const [expected] = await gpu.read([net.forward(images)]);
    assert.deepEqual(
      printed.values,
      Array.from(expected),
      "same adapter, same seed: same features",
    );
    await Deno.remove(dir, { recursive: true });
  },
});
