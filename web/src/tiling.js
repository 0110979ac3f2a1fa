// Full-resolution layout (format/SPEC.md "Kinds 3 and 4", Layout): windows, bands,
// groups, chains and the segment each group's tokens go into.

/** Window width w, height h, window column starts and bands of an image header. */
export function layout({ width, height, grid, contextRows, segmentWindows, chain }) {
  const w = Math.min(grid, width);
  const h = Math.min(grid, height);
  const columns = [];
  for (let x = 0; x < width; x += w) columns.push(x);
  const bands = [{ top: 0, known: 0, rows: h }];
  let done = h; // first row not yet coded
  while (done < height) {
    const top = Math.min(done - contextRows, height - h);
    bands.push({ top, known: done - top, rows: h });
    done = top + h;
  }
  const groupCount = Math.ceil(columns.length / segmentWindows);
  const groups = [];
  for (let g = 0; g < groupCount; g++) {
    groups.push(columns.slice(g * segmentWindows, (g + 1) * segmentWindows).map((_, i) => g * segmentWindows + i));
  }
  return { w, h, columns, bands, groups, chain };
}

/** Segment records the header announces: one per chain, or one per (band, group). */
export function segmentCount(header) {
  const { bands, groups } = layout(header);
  return header.chain ? groups.length : bands.length * groups.length;
}

/** The segment index that holds group g of band b. */
export function segmentOf(plan, band, group) {
  return plan.chain ? group : band * plan.groups.length + group;
}

/** Model position of each window cell in raster order: row * grid + col. */
export function cellPositions(w, h, grid) {
  const out = new Int32Array(w * h);
  for (let r = 0; r < h; r++) for (let c = 0; c < w; c++) out[r * w + c] = r * grid + c;
  return out;
}
