{# Click-to-sort on table headers, included inline by page.html; the tables read without it. #}
(function(){
  function val(row, i){ var c = row.cells[i]; return c ? c.getAttribute('data-value') : null; }
  function sortBy(table, i, th){
    var heads = table.tHead.rows[0].cells;
    var dir = th.getAttribute('aria-sort') === 'descending' ? 'ascending'
            : th.getAttribute('aria-sort') === 'ascending' ? 'descending'
            : (th.getAttribute('data-sort') === 'num' ? 'descending' : 'ascending');
    for (var h = 0; h < heads.length; h++) heads[h].removeAttribute('aria-sort');
    th.setAttribute('aria-sort', dir);
    var numeric = th.getAttribute('data-sort') === 'num', sign = dir === 'ascending' ? 1 : -1;
    var body = table.tBodies[0], rows = Array.prototype.slice.call(body.rows);
    rows.sort(function(a, b){
      var x = val(a, i), y = val(b, i);
      if (numeric){
        var xm = x === null || x === '', ym = y === null || y === '';
        if (xm || ym) return xm === ym ? 0 : (xm ? 1 : -1);  // missing values always last
        return sign * (parseFloat(x) - parseFloat(y));
      }
      return sign * String(x).localeCompare(String(y));
    });
    rows.forEach(function(r){ body.appendChild(r); });
  }
  var tables = document.querySelectorAll('table.sortable');
  Array.prototype.forEach.call(tables, function(table){
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function(th, i){
      if (!th.hasAttribute('data-sort')) return;
      th.tabIndex = 0;
      th.addEventListener('click', function(){ sortBy(table, i, th); });
      th.addEventListener('keydown', function(e){
        if (e.key === 'Enter' || e.key === ' '){ e.preventDefault(); sortBy(table, i, th); }
      });
    });
  });
})();
