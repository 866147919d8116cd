(function(){
var sel=null;
function fmt(ms){var s=Math.max(0,Math.ceil(ms/1000));if(s<60)return s+"s";if(s<3600)return Math.floor(s/60)+"m "+String(s%60).padStart(2,"0")+"s";return Math.floor(s/3600)+"h "+String(Math.floor(s%3600/60)).padStart(2,"0")+"m";}
function tick(){var now=Date.now();document.querySelectorAll("[data-until]").forEach(function(e){var d=+e.dataset.until-now;e.textContent=d>0?L["in"]+fmt(d):L.now;});}
function show(){var box=document.getElementById("reason");document.querySelectorAll("td.sel").forEach(function(c){c.classList.remove("sel");});
 var cell=sel&&document.querySelector('td[data-cell="'+CSS.escape(sel)+'"]');
 if(!cell){box.hidden=true;return;}cell.classList.add("sel");
 box.hidden=false;box.textContent="";var h=document.createElement("strong");
 var col=cell.closest("table").querySelectorAll("thead th")[cell.cellIndex];
 h.textContent=cell.closest("tr").querySelector("code").textContent+" · "+(col?col.textContent:"")+" · "+(cell.classList.contains("exhausted")?L.day_out:L.cooling_down)+" "+L.until+" "+new Date(+cell.dataset.free).toISOString().replace(".000","");box.appendChild(h);
 box.appendChild(document.createTextNode("\n"+cell.dataset.reason));}
document.addEventListener("click",function(ev){var c=ev.target.closest("td.mark");if(!c)return;sel=(sel===c.dataset.cell)?null:c.dataset.cell;show();});
function refresh(){fetch(location.pathname+location.search,{credentials:"same-origin",headers:{accept:"text/html"}}).then(function(r){if(!r.ok)throw r;return r.text();}).then(function(t){
 var doc=new DOMParser().parseFromString(t,"text/html");var n=doc.getElementById("data");if(!n)return;
 document.getElementById("data").replaceWith(n);var m=doc.getElementById("meta");if(m)document.getElementById("meta").replaceWith(m);show();tick();}).catch(function(){});}
document.getElementById("refresh").addEventListener("click",refresh);
document.getElementById("reset").addEventListener("click",function(){if(!confirm(L.reset_confirm))return;
 fetch("/stat/reset",{method:"POST",credentials:"same-origin",headers:{"x-gemini-proxy-action":"reset"}}).then(function(){sel=null;refresh();});});
// The language switch is remembered (a cookie the server reads).
document.getElementById("lang").addEventListener("click",function(){document.cookie="stat_lang="+this.dataset.lang+"; path=/; max-age=31536000; SameSite=Strict";});
setInterval(refresh,15000);setInterval(tick,1000);tick();
})();
(function(){
if(!document.body.dataset.admin)return;
var out=document.getElementById("admin-result");
function show(t){out.hidden=false;out.textContent=t;}
function call(method,path,body){return fetch(path,{method:method,credentials:"same-origin",headers:{"content-type":"application/json","x-gemini-proxy-action":"admin"},body:body===undefined?undefined:JSON.stringify(body)}).then(function(r){return r.json().then(function(j){return {ok:r.ok,status:r.status,json:j};});});}
function summary(j){
 if(j.added)return j.added.length+" "+L.added+", "+j.already_present.length+" "+L.already+", "+j.restored.length+" "+L.restored+"; "+j.key_count+" "+L.in_pool;
 if(j.checked)return j.checked.map(function(c){return c.id+": "+c.status+(c.reason?" ("+c.reason+")":"");}).join("\n")+(j.remaining?"\n"+j.remaining+" "+L.more_to_check:"");
 if(j.secret)return j.client.name+" ("+j.client.id+"): "+L.shown_once+"\n\n"+j.secret+"\n\n"+L.copy_now;
 if(j.client)return j.client.name+" ("+j.client.id+"): "+JSON.stringify(j.client.quota);
 if(j.revoked)return L.revoked+" "+j.revoked;
 if(j.removed)return L.removed+" "+j.removed+"; "+j.key_count+" "+L.in_pool;
 if(j.id)return j.key+" ("+j.id+")"+(j.disabled?" "+L.disabled+": "+j.disabled.reason:" "+L.enabled)+(j.project?", "+L.project+" "+j.project:"");
 return JSON.stringify(j);}
function done(label){return function(r){
 if(!r.ok){show(L[label]+" "+L.failed+" ("+r.status+"): "+((r.json.error&&r.json.error.message)||JSON.stringify(r.json)));return;}
 show(L[label]+": "+summary(r.json));document.getElementById("refresh").click();};}
document.getElementById("add-keys").addEventListener("submit",function(ev){ev.preventDefault();
 var keys=document.getElementById("new-keys"),project=document.getElementById("new-project").value.trim();
 call("POST","/admin/keys",{keys:keys.value,project:project||null}).then(function(r){if(r.ok)keys.value="";done("Add")(r);});});
function quota(v){v=String(v||"").trim().replace(/[ _,]/g,"");if(v==="")return null;if(!/^[0-9]+$/.test(v))throw new Error(L.quota_bad+v);return Number(v);}
function quotas(get){try{return get();}catch(e){show(e.message);return null;}}
document.getElementById("add-client").addEventListener("submit",function(ev){ev.preventDefault();
 var f=ev.target,models=f.elements.models.value.split(",").map(function(m){return m.trim();}).filter(Boolean);
 var q=quotas(function(){return {daily_requests:quota(f.elements.daily_requests.value),daily_tokens:quota(f.elements.daily_tokens.value)};});if(!q)return;
 call("POST","/admin/clients",{name:f.elements.name.value,models:models.length?models:null,daily_requests:q.daily_requests,daily_tokens:q.daily_tokens}).then(function(r){if(r.ok)f.reset();done("Client")(r);});});
function lines(list){return (list||[]).map(function(a){return a.from+"="+a.to;}).join("\n");}
function aliases(j){document.getElementById("alias-table").value=lines(j.aliases);
 document.getElementById("alias-layers").textContent="MODEL_ALIASES:\n"+(lines(j.configured)||L.none)+"\n\n"+L.defaults+":\n"+lines(j.defaults);}
call("GET","/admin/aliases").then(function(r){if(r.ok)aliases(r.json);}).catch(function(){});
document.getElementById("aliases").addEventListener("submit",function(ev){ev.preventDefault();
 call("PUT","/admin/aliases",{aliases:document.getElementById("alias-table").value}).then(function(r){
  if(!r.ok){show(L.Aliases+" "+L.failed+" ("+r.status+"): "+((r.json.error&&r.json.error.message)||JSON.stringify(r.json)));return;}
  aliases(r.json);show(L.Aliases+": "+r.json.aliases.length+" "+L.aliases_set);});});
function proxies(j){var list=j.projects||[],names=document.getElementById("proxy-projects");
 document.getElementById("proxy-list").textContent=list.map(function(p){return p.project+" ("+p.keys+" "+L.keys_word+"): "+(p.proxy||L.direct);}).join("\n")||L.none;
 names.textContent="";list.forEach(function(p){var o=document.createElement("option");o.value=p.project;names.appendChild(o);});}
call("GET","/admin/proxies").then(function(r){if(r.ok)proxies(r.json);}).catch(function(){});
document.getElementById("proxies").addEventListener("submit",function(ev){ev.preventDefault();var f=ev.target;
 call("PUT","/admin/proxies",{project:f.elements.project.value.trim(),proxy:f.elements.proxy.value.trim()||null}).then(function(r){
  if(!r.ok){show(L.Proxy+" "+L.failed+" ("+r.status+"): "+((r.json.error&&r.json.error.message)||JSON.stringify(r.json)));return;}
  f.elements.proxy.value="";proxies(r.json);show(L.Proxy+": "+L.proxy_set);});});
document.getElementById("check-keys").addEventListener("click",function(){call("POST","/admin/keys/check",{}).then(done("Check"));});
document.addEventListener("click",function(ev){var b=ev.target.closest("button[data-act]");if(!b)return;
 var id=b.dataset.id,act=b.dataset.act,path="/admin/keys/"+encodeURIComponent(id);
 if(act==="check")call("POST","/admin/keys/check",{ids:[id]}).then(done("Check"));
 else if(act==="disable"){var note=prompt(L.why_disable,"");if(note===null)return;call("POST",path+"/disable",{note:note}).then(done("Disable"));}
 else if(act==="enable")call("POST",path+"/enable",{}).then(done("Enable"));
 else if(act==="project"){var p=prompt(L.key_project,b.dataset.project||"");if(p===null)return;call("PATCH",path,{project:p.trim()||null}).then(done("Project"));}
 else if(act==="client-revoke"){if(!confirm(L.revoke_confirm))return;call("DELETE","/admin/clients/"+encodeURIComponent(id)).then(done("Revoke"));}
 else if(act==="client-quota"){var rq=prompt(L.requests_day,b.dataset.requests);if(rq===null)return;var tq=prompt(L.tokens_day,b.dataset.tokens);if(tq===null)return;
  var q=quotas(function(){return {daily_requests:quota(rq),daily_tokens:quota(tq)};});if(!q)return;
  call("PATCH","/admin/clients/"+encodeURIComponent(id),q).then(done("Quotas"));}
 else if(act==="remove"){if(!confirm(L.remove_confirm))return;call("DELETE",path).then(done("Remove"));}});
})();
(function(){
if(!document.body.dataset.admin)return;
var body=document.querySelector("#req-table tbody"),more=document.getElementById("req-more"),detail=document.getElementById("req-detail"),empty=document.getElementById("req-empty");
var next=null,shown={};
function query(){var f=document.getElementById("req-filter").elements,q=[];["status","model","key","client"].forEach(function(n){var v=f[n].value.trim();if(v)q.push(n+"="+encodeURIComponent(v));});return q;}
function cell(tr,text,cls){var td=document.createElement("td");td.textContent=text==null?"":String(text);if(cls)td.className=cls;tr.appendChild(td);return td;}
function ms(v){return v==null?"":v<1000?v+" ms":(v/1000).toFixed(1)+" s";}
function tokens(t){return t?(t.prompt||0)+(t.output||0)+(t.thinking||0):"";}
function row(r){shown[r.seq]=r;var tr=document.createElement("tr");tr.dataset.seq=r.seq;tr.className="req"+(r.status>=400||r.status===0?" failed":"");
 cell(tr,r.at?new Date(r.at).toISOString().replace("T"," ").replace(/\.\d+Z$/,""):"","key");cell(tr,r.status||L.no_status,r.status>=500||r.status===0?"over":"");cell(tr,r.dialect);
 cell(tr,(r.model||"")+(r.model_asked?" ← "+r.model_asked:""));cell(tr,r.client_name||r.client||"");
 cell(tr,(r.attempts||[]).map(function(a){return a.key+" "+a.outcome;}).join(", "));cell(tr,ms(r.ttfb_ms));cell(tr,ms(r.ms));cell(tr,tokens(r.tokens));cell(tr,r.error||"");body.appendChild(tr);}
function load(reset){var q=query();if(!reset&&next)q.push("before="+next);q.push("limit=50");
 fetch("/admin/requests?"+q.join("&"),{credentials:"same-origin",headers:{"x-gemini-proxy-action":"admin"}}).then(function(r){return r.json();}).then(function(j){
  if(reset){body.textContent="";shown={};detail.hidden=true;}(j.requests||[]).forEach(row);next=j.next;more.hidden=!next;empty.hidden=body.children.length>0;}).catch(function(){});}
function show(r){detail.hidden=false;var lines=[(r.request_id?L.request+" "+r.request_id+" · ":"")+r.method+" "+r.path+" · "+(r.status||L.no_answer)+(r.streamed?" · "+L.streamed:"")];
 if(r.client)lines.push(L.client+": "+(r.client_name||"")+" ("+r.client+")");if(r.model)lines.push(L.model+": "+r.model+(r.model_asked?" ("+L.asked_for+" "+r.model_asked+")":""));
 (r.attempts||[]).forEach(function(a,i){lines.push(L.attempt+" "+(i+1)+": "+L.key+" "+a.key+" · "+a.outcome+(a.reason?" · "+a.reason:""));});
 if(r.error)lines.push(L.error+": "+r.error+(r.reason?" · "+r.reason:""));if(r.tokens)lines.push(L.tokens+": "+JSON.stringify(r.tokens));
 lines.push(L.first_byte+" "+ms(r.ttfb_ms)+" · "+L.total+" "+ms(r.ms));detail.textContent=lines.join("\n");}
body.addEventListener("click",function(ev){var tr=ev.target.closest("tr.req");if(!tr)return;document.querySelectorAll("tr.req.sel").forEach(function(t){t.classList.remove("sel");});tr.classList.add("sel");show(shown[tr.dataset.seq]);});
document.getElementById("req-filter").addEventListener("submit",function(ev){ev.preventDefault();next=null;load(true);});
more.addEventListener("click",function(){load(false);});
document.getElementById("refresh").addEventListener("click",function(){next=null;load(true);});
load(true);
})();
