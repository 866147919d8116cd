(function(){
var sel=null;
function fmt(ms){var s=Math.max(0,Math.ceil(ms/1000));if(s<60)return s+"s";if(s<3600)return Math.floor(s/60)+"m "+String(s%60).padStart(2,"0")+"s";return Math.floor(s/3600)+"h "+String(Math.floor(s%3600/60)).padStart(2,"0")+"m";}
function tick(){var now=Date.now();document.querySelectorAll("[data-until]").forEach(function(e){var d=+e.dataset.until-now;e.textContent=d>0?"in "+fmt(d):"now";});}
function show(){var box=document.getElementById("reason");document.querySelectorAll("td.sel").forEach(function(c){c.classList.remove("sel");});
 var cell=sel&&document.querySelector('td[data-cell="'+CSS.escape(sel)+'"]');
 if(!cell){box.hidden=true;return;}cell.classList.add("sel");
 box.hidden=false;box.textContent="";var h=document.createElement("strong");
 var col=cell.closest("table").querySelectorAll("thead th")[cell.cellIndex];
 h.textContent=cell.closest("tr").querySelector("code").textContent+" · "+(col?col.textContent:"")+" · "+(cell.classList.contains("exhausted")?"exhausted for the day":"cooling down")+" until "+new Date(+cell.dataset.free).toISOString().replace(".000","");box.appendChild(h);
 box.appendChild(document.createTextNode("\n"+cell.dataset.reason));}
document.addEventListener("click",function(ev){var c=ev.target.closest("td.mark");if(!c)return;sel=(sel===c.dataset.cell)?null:c.dataset.cell;show();});
function refresh(){fetch(location.pathname,{credentials:"same-origin",headers:{accept:"text/html"}}).then(function(r){if(!r.ok)throw r;return r.text();}).then(function(t){
 var doc=new DOMParser().parseFromString(t,"text/html");var n=doc.getElementById("data");if(!n)return;
 document.getElementById("data").replaceWith(n);var m=doc.getElementById("meta");if(m)document.getElementById("meta").replaceWith(m);show();tick();}).catch(function(){});}
document.getElementById("refresh").addEventListener("click",refresh);
document.getElementById("reset").addEventListener("click",function(){if(!confirm("Clear every mark and counter, and re-enable disabled keys?"))return;
 fetch("/stat/reset",{method:"POST",credentials:"same-origin",headers:{"x-gemini-proxy-action":"reset"}}).then(function(){sel=null;refresh();});});
setInterval(refresh,15000);setInterval(tick,1000);tick();
})();
