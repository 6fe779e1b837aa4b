// A stacked bar chart on <canvas>, drawn by hand (no library): one bar per
// day, one segment per series. The numbers are also in the table under it.
const PALETTE = ['#0b57d0', '#b3261e', '#146c2e', '#7c4dff', '#a05a00', '#006a6a', '#8e24aa',
  '#455a64', '#c2185b', '#33691e', '#5d4037', '#1565c0'];

export function colorOf(i) { return PALETTE[i % PALETTE.length]; }

// labels: x labels; series: [{name, values[]}] aligned with labels.
export function drawStacked(canvas, labels, series) {
  const dpr = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || 600;
  const hgt = canvas.clientHeight || 240;
  canvas.width = Math.round(w * dpr);
  canvas.height = Math.round(hgt * dpr);
  const g = canvas.getContext('2d');
  g.scale(dpr, dpr);
  g.clearRect(0, 0, w, hgt);
  const pad = { l: 40, r: 8, t: 8, b: 28 };
  const totals = labels.map((_, i) => series.reduce((s, x) => s + (x.values[i] || 0), 0));
  // Whole-number gridlines: four steps of a whole number.
  const step = Math.max(1, Math.ceil(Math.max(...totals, 0) / 4));
  const max = step * 4;
  const plotW = w - pad.l - pad.r;
  const plotH = hgt - pad.t - pad.b;
  g.font = '12px system-ui, sans-serif';
  g.fillStyle = '#444';
  g.strokeStyle = '#ccc';
  g.lineWidth = 1;
  for (let k = 0; k <= 4; k++) {
    const v = step * k;
    const y = pad.t + plotH - (plotH * k) / 4;
    g.beginPath(); g.moveTo(pad.l, y + 0.5); g.lineTo(w - pad.r, y + 0.5); g.stroke();
    g.textAlign = 'right'; g.textBaseline = 'middle';
    g.fillText(String(v), pad.l - 4, y);
  }
  const slot = plotW / Math.max(1, labels.length);
  const barW = Math.max(4, slot * 0.6);
  labels.forEach((label, i) => {
    const x = pad.l + slot * i + (slot - barW) / 2;
    let y = pad.t + plotH;
    series.forEach((s, si) => {
      const v = s.values[i] || 0;
      if (!v) return;
      const bh = (plotH * v) / max;
      g.fillStyle = colorOf(si);
      g.fillRect(x, y - bh, barW, bh);
      y -= bh;
    });
    g.fillStyle = '#444'; g.textAlign = 'center'; g.textBaseline = 'top';
    if (labels.length <= 10 || i % Math.ceil(labels.length / 10) === 0)
      g.fillText(label, x + barW / 2, pad.t + plotH + 6);
  });
}
