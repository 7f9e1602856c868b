// feedgraph review console: keyboard shortcuts for the review queue, Ctrl+Enter for the
// Cypher box. Pages work without it; every action is a plain form post.
(function () {
  "use strict";

  function typing(el) {
    return el && (el.tagName === "INPUT" || el.tagName === "TEXTAREA" || el.tagName === "SELECT");
  }

  function setupQueue() {
    var cards = Array.prototype.slice.call(document.querySelectorAll("#queue article.item"));
    if (cards.length === 0) return;
    var current = 0;

    function select(i) {
      if (i < 0 || i >= cards.length) return;
      cards[current].classList.remove("current");
      current = i;
      cards[current].classList.add("current");
      cards[current].scrollIntoView({ block: "nearest" });
    }

    function submit(card, decision) {
      var form = card.querySelector("form.review");
      if (!form) return;
      var button = form.querySelector('button[value="' + decision + '"]');
      if (form.requestSubmit) form.requestSubmit(button); else button.click();
    }

    cards.forEach(function (card, i) {
      card.addEventListener("click", function () { select(i); });
      var reason = card.querySelector("input.reason");
      if (!reason) return;
      reason.addEventListener("keydown", function (e) {
        if (e.key === "Enter") {
          // Enter in the reason box rejects with that reason; approving is the a key or
          // its button, so a half-typed reason never approves by accident.
          e.preventDefault();
          if (reason.value.trim() !== "") submit(card, "rejected");
        } else if (e.key === "Escape") {
          reason.blur();
        }
      });
    });

    document.addEventListener("keydown", function (e) {
      if (e.ctrlKey || e.metaKey || e.altKey || typing(document.activeElement)) return;
      var card = cards[current];
      switch (e.key) {
        case "j": case "n": select(current + 1); break;
        case "k": select(current - 1); break;
        case "o": {
          var link = card.querySelector("a.id");
          if (link) window.location.href = link.href;
          break;
        }
        case "a": submit(card, "approved"); break;
        case "r": {
          var reason = card.querySelector("input.reason");
          if (!reason) return;
          if (reason.value.trim() === "") reason.focus(); else submit(card, "rejected");
          break;
        }
        default: return;
      }
      e.preventDefault();
    });
  }

  function setupQuery() {
    var box = document.getElementById("query");
    if (!box) return;
    box.addEventListener("keydown", function (e) {
      if (e.key === "Enter" && (e.ctrlKey || e.metaKey)) {
        e.preventDefault();
        var form = document.getElementById("query-form");
        if (form.requestSubmit) form.requestSubmit(); else form.submit();
      }
    });
  }

  document.addEventListener("DOMContentLoaded", function () {
    setupQueue();
    setupQuery();
  });
})();
