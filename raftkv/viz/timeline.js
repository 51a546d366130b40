(function(){
const M = JSON.parse(document.getElementById('model').textContent);
const svg = document.getElementById('tl');
const NS = 'http://www.w3.org/2000/svg';
const LANE = 56, TOP = 24, LEFT = 60, W = Math.max(900, window.innerWidth - 40);
const H = TOP + LANE * M.nodes.length + 20;
svg.setAttribute('width', W); svg.setAttribute('height', H);
const ROLE = {follower:'#dfe6ee', 'pre-candidate':'#f8e7a1', candidate:'#f5b041', leader:'#58d68d'};
const BAND = {partition:'rgba(52,152,219,0.15)', loss:'rgba(231,76,60,0.10)', dup:'rgba(155,89,182,0.10)',
  reorder:'rgba(241,196,15,0.12)', churn:'rgba(230,126,34,0.10)', isolate:'rgba(52,73,94,0.12)'};
const lane = {}; M.nodes.forEach((n, i) => lane[n] = i);
let t0 = 0, t1 = Math.max(1, M.end), cursor = null;
const kinds = [...new Set(M.messages.map(m => m[4]))].sort();
const sel = document.getElementById('kind');
kinds.forEach(k => { const o = document.createElement('option'); o.value = k; o.textContent = k; sel.appendChild(o); });
function x(t){ return LEFT + (t - t0) / (t1 - t0) * (W - LEFT - 10); }
function tAt(px){ return t0 + (px - LEFT) / (W - LEFT - 10) * (t1 - t0); }
function el(name, attrs, parent, text){
  const e = document.createElementNS(NS, name);
  for (const k in attrs) e.setAttribute(k, attrs[k]);
  if (text !== undefined) e.textContent = text;
  (parent || svg).appendChild(e); return e;
}
function clipX(a, b){ return [Math.max(LEFT, x(a)), Math.min(W - 10, x(b))]; }
function maxIndex(){
  let m = 1;
  M.nodes.forEach(n => { M.logs[n].forEach(a => { if (a[1] > 0) m = Math.max(m, a[1] + a[2].length - 1); });
    M.commits[n].forEach(c => { m = Math.max(m, c[1]); }); });
  return m;
}
const MAXI = maxIndex();
function render(){
  while (svg.firstChild) svg.removeChild(svg.firstChild);
  document.getElementById('range').textContent = (t0/1e6).toFixed(3) + 's - ' + (t1/1e6).toFixed(3) + 's';
  // time axis
  const span = t1 - t0, raw = span / 10, mag = Math.pow(10, Math.floor(Math.log10(raw)));
  const stepUs = mag * (raw / mag < 2 ? 2 : raw / mag < 5 ? 5 : 10);
  for (let t = Math.ceil(t0 / stepUs) * stepUs; t <= t1; t += stepUs) {
    el('line', {x1:x(t), x2:x(t), y1:TOP-4, y2:H-20, stroke:'#eee'});
    el('text', {x:x(t)+2, y:TOP-8, 'font-size':10, fill:'#666'}, null, (t/1e6).toFixed(stepUs < 1e3 ? 4 : stepUs < 1e5 ? 3 : 1) + 's');
  }
  M.bands.forEach(b => {
    if (b.t1 < t0 || b.t0 > t1) return;
    const [a, c] = clipX(b.t0, b.t1);
    const r = el('rect', {x:a, y:TOP, width:Math.max(1, c-a), height:LANE*M.nodes.length, fill:BAND[b.kind]||'rgba(0,0,0,0.08)', class:'band'});
    el('title', {}, r, b.label + ' (' + (b.t0/1e6).toFixed(3) + 's - ' + (b.t1/1e6).toFixed(3) + 's)');
  });
  M.nodes.forEach((n, i) => {
    const y = TOP + i * LANE;
    const g = el('g', {class:'lane', 'data-node':n});
    el('text', {x:4, y:y+LANE/2, 'font-size':12, 'font-weight':'bold'}, g, n);
    const rs = M.roles[n];
    for (let k = 0; k < rs.length; k++) {
      const s = rs[k][0], e = k + 1 < rs.length ? rs[k+1][0] : M.end;
      if (e < t0 || s > t1) continue;
      const [a, c] = clipX(s, e);
      const r = el('rect', {x:a, y:y+4, width:Math.max(0.5, c-a), height:LANE-22, fill:ROLE[rs[k][1]]||'#eee'}, g);
      el('title', {}, r, n + ' ' + rs[k][1] + ' term ' + rs[k][2]);
      if (c - a > 24) el('text', {x:a+2, y:y+15, 'font-size':9, fill:'#333'}, g, 't' + rs[k][2]);
    }
    M.down[n].forEach(d => {
      if (d[1] < t0 || d[0] > t1) return;
      const [a, c] = clipX(d[0], d[1]);
      const r = el('rect', {x:a, y:y+4, width:Math.max(1, c-a), height:LANE-22, fill:'url(#hatch)'}, g);
      el('title', {}, r, n + ' down');
    });
    // log length and commit index, scaled to the lane
    const yv = v => y + LANE - 20 - (v / MAXI) * (LANE - 26);
    let pts = [], last = 0;
    M.logs[n].forEach(a => {
      if (a[1] > 0) last = a[1] + a[2].length - 1;
      else if (a[1] === -1) last = Math.min(last, a[2]);
      else last = a[2];
      if (a[0] >= t0 && a[0] <= t1) pts.push(x(a[0]).toFixed(1) + ',' + yv(last).toFixed(1));
    });
    if (pts.length) el('polyline', {points:pts.join(' '), fill:'none', stroke:'#2471a3', 'stroke-width':1}, g);
    pts = M.commits[n].filter(c => c[0] >= t0 && c[0] <= t1).map(c => x(c[0]).toFixed(1) + ',' + yv(c[1]).toFixed(1));
    if (pts.length) el('polyline', {points:pts.join(' '), fill:'none', stroke:'#1e8449', 'stroke-width':1, 'stroke-dasharray':'3,2'}, g);
    el('line', {x1:LEFT, x2:W-10, y1:y+LANE-2, y2:y+LANE-2, stroke:'#ccc'}, g);
  });
  M.elections.forEach(e => {
    if (e[0] < t0 || e[0] > t1) return;
    const y = TOP + lane[e[1]] * LANE + 4, px = x(e[0]);
    const p = el('polygon', {points:(px-4)+','+(y-4)+' '+(px+4)+','+(y-4)+' '+px+','+(y+3), fill:'#117a65', class:'election'});
    el('title', {}, p, e[1] + ' elected, term ' + e[2] + ' at ' + (e[0]/1e6).toFixed(6) + 's');
  });
  if (document.getElementById('arrows').checked) {
    const want = sel.value;
    let drawn = 0;
    for (const m of M.messages) {
      if (m[1] < t0 || m[0] > t1 || (want && m[4] !== want)) continue;
      if (++drawn > 1500) break;
      const ya = TOP + lane[m[2]] * LANE + LANE/2, yb = TOP + lane[m[3]] * LANE + LANE/2;
      el('line', {x1:x(m[0]), y1:ya, x2:x(m[1]), y2:yb, stroke:'rgba(90,90,90,0.35)', 'stroke-width':0.7, 'marker-end':'url(#arrow)'});
    }
  }
  if (M.violation && M.violation.t >= t0 && M.violation.t <= t1) {
    const px = x(M.violation.t);
    const v = el('line', {x1:px, x2:px, y1:TOP-4, y2:H-20, stroke:'#c0392b', 'stroke-width':2, class:'violation'});
    el('title', {}, v, M.violation.checker + ': ' + M.violation.message);
  }
  if (cursor !== null && cursor >= t0 && cursor <= t1) el('line', {x1:x(cursor), x2:x(cursor), y1:TOP-4, y2:H-20, stroke:'#000', 'stroke-dasharray':'2,2'});
  const defs = el('defs', {});
  const mk = el('marker', {id:'arrow', viewBox:'0 0 6 6', refX:6, refY:3, markerWidth:5, markerHeight:5, orient:'auto'}, defs);
  el('path', {d:'M0,0 L6,3 L0,6 z', fill:'rgba(90,90,90,0.6)'}, mk);
  const pat = el('pattern', {id:'hatch', width:6, height:6, patternUnits:'userSpaceOnUse', patternTransform:'rotate(45)'}, defs);
  el('rect', {width:6, height:6, fill:'rgba(255,255,255,0.6)'}, pat);
  el('line', {x1:0, y1:0, x2:0, y2:6, stroke:'#c0392b', 'stroke-width':3}, pat);
}
function logAt(n, t){
  const log = [];  // terms, index i+1
  let snap = 0;
  for (const a of M.logs[n]) {
    if (a[0] > t) break;
    if (a[1] > 0) { log.length = Math.max(0, a[1] - 1 - snap); for (const term of a[2]) log.push(term); }
    else if (a[1] === -1) { log.length = Math.max(0, Math.min(log.length, a[2] - snap)); }
    else { snap = a[2]; log.length = 0; }
  }
  return {snap: snap, terms: log};
}
function stateAt(list, t){ let s = null; for (const a of list) { if (a[0] > t) break; s = a; } return s; }
function inspect(t){
  cursor = t;
  const out = document.getElementById('inspect');
  out.textContent = 'at ' + (t/1e6).toFixed(6) + 's\n';
  M.nodes.forEach(n => {
    const r = stateAt(M.roles[n], t), c = stateAt(M.commits[n], t), L = logAt(n, t);
    const isDown = M.down[n].some(d => d[0] <= t && t < d[1]);
    const line = document.createElement('div');
    line.className = 'logline';
    line.textContent = n + (isDown ? ' DOWN' : '') + ' ' + (r ? r[1] + ' t' + r[2] : '-') +
      ' commit=' + (c ? c[1] : 0) + ' last=' + (L.snap + L.terms.length) + (L.snap ? ' snapshot@' + L.snap : '') + '  ';
    const first = Math.max(0, L.terms.length - 60);
    if (first > 0) line.appendChild(document.createTextNode('... '));
    for (let i = first; i < L.terms.length; i++) {
      const s = document.createElement('span');
      s.className = 'term'; s.title = 'index ' + (L.snap + i + 1) + ' term ' + L.terms[i];
      s.style.background = 'hsl(' + ((L.terms[i] * 67) % 360) + ',60%,60%)';
      line.appendChild(s);
    }
    out.appendChild(line);
  });
  render();
}
let drag = null;
svg.addEventListener('wheel', ev => {
  ev.preventDefault();
  const t = tAt(ev.offsetX), f = ev.deltaY > 0 ? 1.25 : 0.8;
  const nt0 = Math.max(0, t - (t - t0) * f), nt1 = Math.min(M.end, t + (t1 - t) * f);
  if (nt1 - nt0 > 50) { t0 = nt0; t1 = nt1; render(); }
}, {passive:false});
svg.addEventListener('mousedown', ev => { drag = {x: ev.offsetX, t0: t0, t1: t1, moved: false}; });
svg.addEventListener('mousemove', ev => {
  if (!drag) return;
  const dt = (ev.offsetX - drag.x) / (W - LEFT - 10) * (drag.t1 - drag.t0);
  if (Math.abs(ev.offsetX - drag.x) > 3) drag.moved = true;
  if (!drag.moved) return;
  const span = drag.t1 - drag.t0;
  t0 = Math.min(Math.max(0, drag.t0 - dt), Math.max(0, M.end - span)); t1 = t0 + span; render();
});
svg.addEventListener('mouseup', ev => { if (drag && !drag.moved) inspect(tAt(ev.offsetX)); drag = null; });
document.getElementById('reset').onclick = () => { t0 = 0; t1 = Math.max(1, M.end); render(); };
document.getElementById('arrows').onchange = render; sel.onchange = render;
if (M.violation) document.getElementById('violation').textContent =
  'VIOLATION ' + M.violation.checker + ' at ' + (M.violation.t/1e6).toFixed(6) + 's: ' + M.violation.message;
const legend = document.getElementById('legend');
Object.keys(ROLE).forEach(k => { const s = document.createElement('span'); s.style.background = ROLE[k]; s.textContent = k; legend.appendChild(s); });
legend.appendChild(document.createTextNode('blue line: log length, green dashed: commit index; ' +
  M.messages.length + ' of ' + M.messages_total + ' messages sampled'));
render();
if (M.violation) inspect(M.violation.t);
})();
