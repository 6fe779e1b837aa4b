// A stacked bar chart on <canvas>, drawn by hand (no library): one bar per
// day, one segment per series. The numbers are also in the table under it.
const PALETTE = ['#0b57d0', '#b3261e', '#146c2e', '#7c4dff', '#a05a00', '#006a6a', '#8e24aa',
  '#455a64', '#c2185b', '#33691e', '#5d4037', '#1565c0'];

export function colorOf(i) { return PALETTE[i % PALETTE.length]; }

// The smallest "round" step (1, 2, 2.5 or 5 times a power of ten) that
// covers `max` in four gridlines; whole numbers when `whole`.
function niceStep(max, whole) {
  if (!(max > 0)) return 1;
  const raw = max / 4;
  const p = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((m) => m * p).find((s) => s >= raw);
  return whole ? Math.max(1, Math.ceil(step)) : step;
}

// labels: x labels; series: [{name, values[]}] aligned with labels;
// fmt: how an axis value is written (whole numbers when absent).
export function drawStacked(canvas, labels, series, fmt) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 600;
  const hgt = canvas.clientHeight || 240;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(hgt * dpr);
  const g = canvas.getContext('2d');
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, hgt);
  const pad = { l: fmt ? 56 : 48, r: 8, t: 8, b: 28 };
  const totals = labels.map((_, i) => series.reduce((s, x) => s + (x.values[i] || 0), 0));
  const step = niceStep(Math.max(...totals, 0), !fmt);
  const max = step * 4;
  const write = fmt || ((v) => String(v));
  const plotW = w - pad.l - pad.r;
  const plotH = hgt - pad.t - pad.b;
  g.font = '12px system-ui, sans-serif';
  g.fillStyle = '#444';
  g.strokeStyle = '#ccc';
  g.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const y = pad.t + plotH - (plotH * k) / 4;
    g.beginPath(); g.moveTo(pad.l, y + 0.5); g.lineTo(w - pad.r, y + 0.5); g.stroke();
    g.textAlign = 'right'; g.textBaseline = 'middle';
    g.fillText(write(step * k), pad.l - 4, y);
  }
  const slot = plotW / Math.max(1, labels.length);
  const barW = Math.max(2, slot * 0.6);
  // Labels no closer than ~44 px, so 90 days fit at 360 px.
  const every = Math.max(1, Math.ceil(labels.length / Math.max(1, Math.floor(plotW / 44))));
  labels.forEach((label, i) => {
    const x = pad.l + slot * i + (slot - barW) / 2;
    let y = pad.t + plotH;
    series.forEach((s, si) => {
      const v = s.values[i] || 0;
      if (!v) return;
      // At least one pixel: a day with traffic never looks empty.
      const bh = Math.max(1, (plotH * v) / max);
      g.fillStyle = colorOf(si);
      g.fillRect(x, y - bh, barW, bh);
      y -= bh;
    });
    g.fillStyle = '#444'; g.textAlign = 'center'; g.textBaseline = 'top';
    if ((labels.length - 1 - i) % every === 0) {
      // Centred under the bar, but never cut off at the canvas' edges.
      const half = g.measureText(label).width / 2;
      g.fillText(label, Math.min(Math.max(x + barW / 2, half + 1), w - half - 1), pad.t + plotH + 6);
    }
  });
}
