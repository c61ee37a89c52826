// A loading state for the dataset pages' slow forms (a snapshot, a diff, a
// leak check take seconds on a large dataset): on submit the button is
// disabled and says what is happening, the form is marked aria-busy, its
// [data-busy-status] note appears, and a second click sends nothing. The
// Content-Security-Policy allows no inline script: the button's busy text
// comes from the form's data-busy attribute.

const busyForms = document.querySelectorAll("form[data-busy]");

function setBusy(form, busy) {
  form.setAttribute("aria-busy", busy ? "true" : "false");
  for (const button of form.querySelectorAll("button[type='submit']")) {
    if (busy) {
      button.dataset.idleText = button.textContent;
      button.textContent = form.dataset.busy;
    } else if (button.dataset.idleText !== undefined) {
      button.textContent = button.dataset.idleText;
    }
    button.disabled = busy;
  }
  // readOnly, not disabled: a disabled field would not be sent.
  for (const field of form.querySelectorAll("textarea, input:not([type='hidden'])")) {
    field.readOnly = busy;
  }
  for (const note of form.querySelectorAll("[data-busy-status]")) {
    note.hidden = !busy;
  }
}

for (const form of busyForms) {
  form.addEventListener("submit", (event) => {
    if (form.getAttribute("aria-busy") === "true") {
      event.preventDefault();
      return;
    }
    setBusy(form, true);
  });
  // Ctrl+Enter (or Cmd+Enter) in a text area sends its form.
  for (const area of form.querySelectorAll("textarea")) {
    area.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        form.requestSubmit();
      }
    });
  }
}

// Back to a page from the browser's cache: its forms are idle again.
window.addEventListener("pageshow", (event) => {
  if (event.persisted) {
    for (const form of busyForms) setBusy(form, false);
  }
});
