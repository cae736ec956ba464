// Drives the Dagster UI in headless Chromium for test_lineage_ui.py; prints one JSON document.
//
//   node lineage_ui.mjs CONFIG.json
//
// CONFIG: {"playwright": dir of playwright-core, "chromium": executable, "base": UI url,
//          "groups": [{"url": group lineage path, "wait_for": an asset name, "screenshot": png?}],
//          "asset": asset page path, "asset_wait_for": [texts the asset page must show]}
//
// For each group lineage page: waits until `wait_for` is drawn, reports the page text and saves
// the screenshot when asked. On the asset page: reports the page text, then opens the Markdown
// preview of the latest materialisation ("[Show Markdown]" beside `preview`) and reports the
// dialog's text. Failures go to "errors" instead of being thrown, so the test can show what the
// page showed.
import { createRequire } from "node:module";
import { readFileSync } from "node:fs";

const config = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { chromium } = createRequire(import.meta.url)(config.playwright);
const out = { groups: [], asset_text: "", preview_text: "", errors: [] };
const firstLine = (error) => String(error.message || error).split("\n")[0];

const browser = await chromium.launch({
  executablePath: config.chromium,
  args: ["--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1600, height: 1000 } });
  page.setDefaultTimeout(60_000);
  page.on("pageerror", (error) => out.errors.push(`page error: ${firstLine(error)}`));

  for (const group of config.groups) {
    let text = "";
    try {
      await page.goto(config.base + group.url, { waitUntil: "domcontentloaded" });
      await page.waitForFunction(
        (name) => document.body && document.body.innerText.includes(name),
        group.wait_for,
      );
      // Node bodies show "Loading..." until the live status (latest event, checks, partitions)
      // arrives; the picture and the text should have it.
      await page
        .waitForFunction(() => !document.body.innerText.includes("Loading..."), null, { timeout: 45_000 })
        .catch(() => out.errors.push(`${group.url}: asset status still loading`));
      await page.waitForTimeout(1000); // let the layout settle
    } catch (error) {
      out.errors.push(`${group.url}: ${firstLine(error)}`);
    }
    text = await page.locator("body").innerText().catch(() => "");
    out.groups.push({ url: group.url, text });
    if (group.screenshot) {
      await page.screenshot({ path: group.screenshot }).catch((e) => out.errors.push(`screenshot: ${firstLine(e)}`));
    }
  }

  try {
    await page.goto(config.base + config.asset, { waitUntil: "domcontentloaded" });
    for (const text of ["Latest materialization", "[Show Markdown]", ...(config.asset_wait_for || [])]) {
      await page.waitForFunction((t) => document.body && document.body.innerText.includes(t), text);
    }
    out.asset_text = await page.locator("body").innerText();
    await page.getByText("[Show Markdown]").first().click();
    const dialog = page.getByRole("dialog");
    await dialog.getByText("Validation report").first().waitFor();
    out.preview_text = await dialog.innerText();
  } catch (error) {
    out.errors.push(`${config.asset}: ${firstLine(error)}`);
    if (!out.asset_text) out.asset_text = await page.locator("body").innerText().catch(() => "");
  }
} finally {
  await browser.close();
}
process.stdout.write(JSON.stringify(out));
