const http = require('http');
const agent = new http.Agent({ keepAlive: true, maxSockets: 4 });
const body = Buffer.alloc(48 * 1024, 'n');
function put(path, expect, trace) {
  return new Promise((resolve) => {
    const headers = { 'Content-Length': body.length, 'X-Trace': trace };
    if (expect) headers['Expect'] = '100-continue';
    const req = http.request({ host: '127.0.0.1', port: 18081, method: 'PUT', path, agent, headers }, (res) => {
      res.resume(); res.on('end', () => resolve(res.statusCode));
    });
    req.on('error', () => resolve(0));
    if (expect) req.on('continue', () => req.end(body)); else req.end(body);
    if (expect) req.on('response', () => {}); 
  });
}
async function worker(w) {
  for (let i = 1; i <= 4; i++) {
    await put(`/dav/n${w}-${i}`, true, `${w}-${i}-a`);
    const st = await put('/e417/z', true, `${w}-${i}-b`);
    if (st === 417) await put('/e417/z', false, `${w}-${i}-b`);
  }
}
Promise.all([1, 2, 3, 4, 5, 6].map(worker)).then(() => { agent.destroy(); });
