// Bundle the dashboard into dist/: one script (with uPlot), one stylesheet, the page.
// Run by scripts/setup.sh (npm ci && npm run build); the wvs build embeds dist/.
import * as esbuild from "esbuild";
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from "node:fs";

mkdirSync("dist", { recursive: true });
await esbuild.build({
  entryPoints: ["src/app.js"],
  bundle: true,
  minify: true,
  format: "iife",
  target: ["chrome110", "firefox110", "safari16"],
  outfile: "dist/app.js",
  logLevel: "warning",
});
const css = readFileSync("node_modules/uplot/dist/uPlot.min.css", "utf8") + readFileSync("src/style.css", "utf8");
writeFileSync("dist/app.css", css);
copyFileSync("src/index.html", "dist/index.html");
console.log("web: built dist/ (index.html, app.js, app.css)");
