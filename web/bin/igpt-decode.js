#!/usr/bin/env node
// igpt-decode IN.igpt [-o OUT.png | -o DIR/] [--model DIR]... [--info] [-q]
// Decodes every image of a stream to PNG; a bad file exits 1 with one line on stderr.
import { readFile, writeFile, mkdir, stat } from 'node:fs/promises';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import { decode, readStream, streamInfo, infoLines } from '../src/index.js';
import { bundleResolver } from '../src/node.js';
import { encodePng } from '../src/png.js';

const HERE = path.dirname(fileURLToPath(import.meta.url));
const USAGE = 'usage: igpt-decode IN.igpt [-o OUT.png | -o DIR/] [--model DIR]... [--info] [-q]';

function parseArgs(argv) {
  const args = { input: null, output: null, models: [], info: false, quiet: false };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === '-o' || a === '--output') args.output = argv[++i];
    else if (a === '--model') args.models.push(argv[++i]);
    else if (a === '--info') args.info = true;
    else if (a === '-q' || a === '--quiet') args.quiet = true;
    else if (a === '-h' || a === '--help') args.help = true;
    else if (a.startsWith('-') && a !== '-') throw new Error(`unknown option ${a}`);
    else if (args.input === null) args.input = a;
    else throw new Error(`unexpected argument ${a}`);
  }
  if (args.help) return args;
  if (!args.input || args.output === undefined || args.models.includes(undefined)) throw new Error(USAGE);
  return args;
}

/** --model directories first, then $IGPT_CODEC_MODELS, then the checkout's shipped bundle. */
function modelDirs(args) {
  const dirs = [...args.models];
  if (process.env.IGPT_CODEC_MODELS) dirs.push(...process.env.IGPT_CODEC_MODELS.split(path.delimiter));
  dirs.push(path.resolve(HERE, '../../codec/models/default'), path.resolve(HERE, '../../codec/models'));
  return dirs;
}

async function isDirectory(p) {
  try {
    return (await stat(p)).isDirectory();
  } catch {
    return false;
  }
}

function stemOf(name) {
  return path.basename(name).replace(/\.igpt$/i, '').replace(/\.[^.]*$/, '') || 'image';
}

async function main() {
  let args;
  try {
    args = parseArgs(process.argv.slice(2));
  } catch (err) {
    console.error(`igpt-decode: ${err.message}`);
    return 2;
  }
  if (args.help) {
    console.log(USAGE);
    return 0;
  }
  const label = args.input;
  try {
    const bytes = new Uint8Array(await readFile(args.input));
    if (args.info) {
      for (const line of infoLines(label, streamInfo(readStream(bytes), bytes.length))) console.log(line);
      return 0;
    }
    const progress = args.quiet || !process.stderr.isTTY ? undefined : (done, total) => {
      process.stderr.write(`\rdecoding ${Math.floor((100 * done) / total)}%`);
    };
    const { images } = await decode(bytes, { model: bundleResolver(modelDirs(args)), onProgress: progress });
    if (progress) process.stderr.write('\r');
    const several = images.length > 1;
    const out = args.output ?? `${args.input.replace(/\.igpt$/i, '')}.png`;
    const toDir = out.endsWith('/') || (await isDirectory(out));
    if (several && !toDir) throw new Error(`${label} holds ${images.length} images: name a directory with -o DIR/`);
    if (toDir) await mkdir(out, { recursive: true });
    const targets = images.map((image, i) => {
      if (!toDir) return out;
      const stem = image.name ? stemOf(image.name) : `${stemOf(args.input)}_${String(i).padStart(3, '0')}`;
      return path.join(out, `${stem}.png`);
    });
    for (let i = 0; i < images.length; i++) await writeFile(targets[i], encodePng(images[i].width, images[i].height, images[i].rgba));
    if (!args.quiet) console.error(`${label}: ${images.length} image${several ? 's' : ''} -> ${several ? path.dirname(targets[0]) + '/' : targets[0]}`);
    return 0;
  } catch (err) {
    const kind = err.name && err.name !== 'Error' ? `${err.name}: ` : '';
    console.error(`igpt-decode: ${label}: ${kind}${String(err.message).split('\n')[0]}`);
    return 1;
  }
}

process.exitCode = await main();
