// CloudFront Function (viewer request) of the widget's distribution (CD-05, CD-02 edge stack).
// The bucket stores each asset once, under /assets/, for every channel; a preview's page at
// /previews/BRANCH/ loads its chunks relative to itself (/previews/BRANCH/assets/...), so those
// requests are rewritten to /assets/.... A directory URL gets its index.html (CloudFront's default
// root object covers "/" only). Nothing else is changed.
var PREVIEW_ASSET = /^\/previews\/[A-Za-z0-9][A-Za-z0-9._-]{0,62}\/(assets\/.+)$/;

function handler(event) {
    var request = event.request;
    var uri = request.uri;
    var asset = PREVIEW_ASSET.exec(uri);
    if (asset && asset[1].indexOf('..') === -1) {
        request.uri = '/' + asset[1];
    } else if (uri.charAt(uri.length - 1) === '/') {
        request.uri = uri + 'index.html';
    }
    return request;
}
