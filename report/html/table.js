(function () {
	document.documentElement.classList.add("js");
	var t = document.getElementById("neg"), b = t.tBodies[0], q = document.getElementById("q"), fv = document.getElementById("fv"), shown = document.getElementById("nshown");
	function filter() {
		var s = q.value.toLowerCase(), v = fv.value, n = 0;
		for (var r of b.rows) { r.hidden = !((!v || r.dataset.verdict === v) && (!s || r.textContent.toLowerCase().includes(s))); if (!r.hidden) n++; }
		shown.textContent = n;
	}
	q.oninput = fv.onchange = filter;
	t.tHead.onclick = function (e) {
		var th = e.target.closest("th"); if (!th) return;
		var i = th.cellIndex, d = th.dataset.dir === "asc" ? -1 : 1;
		for (var h of t.tHead.rows[0].cells) delete h.dataset.dir;
		th.dataset.dir = d > 0 ? "asc" : "desc";
		var rows = Array.from(b.rows).sort(function (x, y) {
			var a = x.cells[i], c = y.cells[i];
			return d * (a.dataset.v !== undefined ? a.dataset.v - c.dataset.v : a.textContent.localeCompare(c.textContent, undefined, {numeric: true}));
		});
		b.append.apply(b, rows);
	};
})();
