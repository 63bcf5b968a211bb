"""The page at `/`: choose or drop an image, see the run's top classes as bars and the nearest
gallery images as thumbnails with their similarity. Static HTML that holds no data: everything
it shows comes from the API (with the key, where the service has one, typed into the page and
sent as `Authorization: Bearer`; thumbnails are fetched the same way, by gallery row)."""

HTML = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>resnet-jax</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>
 body { font: 15px system-ui, sans-serif; margin: 2em auto; max-width: 60em; color: #222; }
 #drop { border: 2px dashed #888; border-radius: 8px; padding: 2em; text-align: center; }
 #drop.over { background: #eef; }
 #query { max-height: 12em; margin-top: 1em; }
 .bar { display: flex; align-items: center; margin: .2em 0; }
 .bar span { width: 12em; overflow: hidden; text-overflow: ellipsis; white-space: nowrap; }
 .bar div { background: #4a7; height: 1em; margin-right: .5em; }
 #neighbors { display: flex; flex-wrap: wrap; gap: 1em; }
 figure { margin: 0; width: 9em; font-size: 12px; word-break: break-all; }
 figure img { width: 9em; height: 9em; object-fit: cover; background: #eee; }
 #error { color: #b00; } #key { display: none; }
</style></head>
<body>
<h1>resnet-jax</h1>
<p id="about">Loading the model...</p>
<p id="key">This service needs its API key: <input id="keyinput" type="password">
 <button id="keybutton">Use it</button></p>
<div id="drop">Drop an image here, or <input id="file" type="file" accept="image/*"></div>
<img id="query" alt="">
<p id="error"></p>
<h2>Classes</h2><div id="classes"></div>
<h2>Nearest gallery images</h2><div id="neighbors"></div>
<script>
let key = "";
const $ = (id) => document.getElementById(id);
function headers(extra) {
  const h = Object.assign({}, extra || {});
  if (key) h["Authorization"] = "Bearer " + key;
  return h;
}
async function api(path, options) {
  const response = await fetch(path, Object.assign({}, options, {headers: headers(
      options && options.headers)}));
  if (response.status === 401) { $("key").style.display = "block"; }
  const body = await response.json().catch(() => ({error: response.statusText}));
  if (!response.ok) throw new Error(body.error || response.statusText);
  return body;
}
async function describe() {
  try {
    const m = await api("/v1/model");
    $("about").textContent = m.model + ", " + m.classes.length + " classes (" + m.task +
        "), step " + m.step + (m.gallery ? "; gallery of " + m.gallery.images + " images" :
        "; no gallery");
  } catch (e) { $("about").textContent = e.message; }
}
function bars(entries) {
  const box = $("classes"); box.innerHTML = "";
  for (const entry of entries) {
    const row = document.createElement("div"); row.className = "bar";
    const name = document.createElement("span"); name.textContent = entry["class"];
    const bar = document.createElement("div");
    bar.style.width = Math.max(1, 300 * entry.probability) + "px";
    const value = document.createElement("em");
    value.textContent = entry.probability.toFixed(3);
    row.append(name, bar, value); box.append(row);
  }
}
async function thumbnails(neighbors) {
  const box = $("neighbors"); box.innerHTML = "";
  for (const n of neighbors) {
    const figure = document.createElement("figure");
    const img = document.createElement("img"); img.alt = n.path;
    const caption = document.createElement("figcaption");
    caption.textContent = n.similarity.toFixed(3) + " " + (n["class"] || "") + " " + n.path;
    figure.append(img, caption); box.append(figure);
    fetch("/v1/gallery/" + n.index + "/image", {headers: headers()})
      .then((r) => r.ok ? r.blob() : null)
      .then((b) => { if (b) img.src = URL.createObjectURL(b); });
  }
}
async function send(file) {
  $("error").textContent = ""; $("query").src = URL.createObjectURL(file);
  const type = {headers: {"Content-Type": file.type || "application/octet-stream"}};
  try {
    const c = await api("/v1/classify?top_k=5", Object.assign({method: "POST", body: file},
                                                              type));
    bars(c.top_k || c.labels);
  } catch (e) { $("error").textContent = e.message; return; }
  try {
    const s = await api("/v1/search?top_k=8", Object.assign({method: "POST", body: file},
                                                            type));
    await thumbnails(s.neighbors);
  } catch (e) { $("neighbors").textContent = e.message; }
}
$("file").addEventListener("change", (e) => { if (e.target.files[0]) send(e.target.files[0]); });
const drop = $("drop");
drop.addEventListener("dragover", (e) => { e.preventDefault(); drop.classList.add("over"); });
drop.addEventListener("dragleave", () => drop.classList.remove("over"));
drop.addEventListener("drop", (e) => {
  e.preventDefault(); drop.classList.remove("over");
  if (e.dataTransfer.files[0]) send(e.dataTransfer.files[0]);
});
$("keybutton").addEventListener("click", () => {
  key = $("keyinput").value; $("key").style.display = "none"; describe();
});
describe();
</script>
</body></html>
"""
