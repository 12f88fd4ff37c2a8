// The SAE-Rad book: long headers of the book's tables may wrap; saerad.css keeps the others on one line,
// so that a short header never breaks into a narrow column.
document.addEventListener("DOMContentLoaded", () => {
  const longHeader = 24; // characters
  for (const header of document.querySelectorAll(".saerad-table thead th")) {
    if (header.textContent.trim().length > longHeader) header.classList.add("saerad-wrap");
  }
});
