// CloudFront Function (viewer response) of the widget's distribution (CD-05, CD-02 edge stack).
// Entry files are stored with the release they belong to in their S3 metadata
// (x-amz-meta-release); every response that has it names it as X-MangaAssist-Release, the header
// the pipeline's verify step and the local edge use. The metadata header itself is not passed on.
function handler(event) {
    var response = event.response;
    var headers = response.headers;
    var release = headers['x-amz-meta-release'];
    if (release && release.value) {
        headers['x-mangaassist-release'] = { value: release.value };
    }
    delete headers['x-amz-meta-release'];
    delete headers['x-amz-meta-sha256'];
    return response;
}
