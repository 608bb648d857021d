// The login page's second ask (app.web.dashboard): a link from another site arrives without the
// SameSite=Strict session cookie; this same-site navigation carries it.
location.replace(document.getElementById('again').href);
