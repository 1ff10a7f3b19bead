// The offline build of the web app: esbuild bundles src/ with the pinned packages of
// package-lock.json into services/ingress/web/ (committed, so the ingress needs no Node.js).
// The same sources and lockfile give the same bytes: tests/unit/test_web_build.py rebuilds and compares.
import { build } from "esbuild";
import { fileURLToPath } from "node:url";
import path from "node:path";

const here = path.dirname(fileURLToPath(import.meta.url));
const outdir = process.argv[2] || path.join(here, "..", "services", "ingress", "web");

await build({
  entryPoints: [path.join(here, "src", "main.jsx")],
  bundle: true,
  minify: true,
  format: "esm",
  target: "es2020",
  jsx: "automatic",
  jsxImportSource: "preact",
  outfile: path.join(outdir, "app.js"),
  legalComments: "linked",
  logLevel: "warning",
});
