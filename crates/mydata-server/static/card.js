// The identity page's link to a local signing agent (`mydata card-agent`, spec D51): the PIN
// and the page's challenge go to the agent on loopback; its signature goes into the form, which
// is then sent as if pasted. Without this script the form still works with a pasted signature.
(function () {
  "use strict";
  var box = document.getElementById("card-agent");
  var form = document.getElementById("cert-form");
  if (!box || !form) { return; }
  box.hidden = false;
  var status = document.getElementById("card-status");
  var say = function (zh, en) { status.textContent = zh + " / " + en; };
  document.getElementById("card-sign").addEventListener("click", function () {
    var pin = document.getElementById("card-pin").value;
    var challenge = form.elements.challenge.value;
    if (!pin) { say("請輸入卡片密碼", "enter the card's PIN"); return; }
    var body = new URLSearchParams({ challenge: challenge, pin: pin });
    say("簽署中…", "signing…");
    fetch(box.dataset.agent + "/sign", { method: "POST", body: body, mode: "cors", credentials: "omit" })
      .then(function (r) { return r.json().then(function (j) { return [r.status, j]; }); })
      .then(function (a) {
        var code = a[0], j = a[1];
        if (code === 200 && j.signature) {
          form.elements.signature.value = j.signature;
          form.submit();
        } else if (code === 401) {
          say("卡片密碼錯誤（尚可嘗試 " + j.tries_left + " 次）", "wrong PIN (" + j.tries_left + " tries left)");
        } else if (code === 423) {
          say("卡片已鎖定", "the card is locked");
        } else {
          say("讀卡程式無法簽署", "the card reader could not sign");
        }
      })
      .catch(function () { say("找不到讀卡程式", "no card reader answered"); });
  });
})();
